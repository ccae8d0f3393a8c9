"""The only code that touches PL/Python: thin entry points (``api``) and SPI adapters."""
