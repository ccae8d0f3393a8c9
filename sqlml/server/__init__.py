"""What the extension's SQL functions call. Kept thin: SPI in, SPI out, no ML logic.

Importing this module must stay cheap and must not import the ML stack: `doctor` has to work
when a package is missing, and a backend that only scores should not load scikit-learn.
"""

from sqlml import __version__
from sqlml.server.errors import entry


@entry
def version():
    return __version__


@entry
def doctor():
    import json
    import os

    from sqlml import stack

    return json.dumps({
        "sqlml": __version__,
        "location": os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
        "python": stack.python_info(),
        "packages": stack.check_packages(),
    })
