"""The one error type sqlml raises for problems a user can fix.

Every message names the problem and, in ``hint``, the fix. ``sqlstate`` is the PostgreSQL
error code the server reports (https://www.postgresql.org/docs/current/errcodes-appendix.html).
The server turns these into clean SQL errors; anything else is an internal error.
"""


class SqlmlError(Exception):
    """A user-facing error: ``str(e)`` is the message, without the ``sqlml:`` prefix."""

    def __init__(self, message, *, hint=None, detail=None, sqlstate="22023"):
        super().__init__(message)
        self.message = message
        self.hint = hint
        self.detail = detail
        self.sqlstate = sqlstate


# SQLSTATEs used across the package, named for readability at the raise site.
INVALID_PARAMETER = "22023"
UNDEFINED_COLUMN = "42703"
UNDEFINED_TABLE = "42P01"
UNDEFINED_OBJECT = "42704"
INSUFFICIENT_PRIVILEGE = "42501"
READ_ONLY_SQL_TRANSACTION = "25006"
DATATYPE_MISMATCH = "42804"
SYNTAX_ERROR = "42601"
DUPLICATE_COLUMN = "42701"
INVALID_TABLE_DEFINITION = "42P16"
DATA_EXCEPTION = "22000"
NUMERIC_VALUE_OUT_OF_RANGE = "22003"
INVALID_TEXT_REPRESENTATION = "22P02"
NOT_NULL_VIOLATION = "23502"
OUT_OF_MEMORY = "53200"
CONFIG_LIMIT = "53400"
STATEMENT_TOO_COMPLEX = "54001"
QUERY_CANCELED = "57014"
LOCK_TIMEOUT = "55P03"
DATA_CORRUPTED = "XX001"
OBJECT_IN_USE = "55006"
OBJECT_NOT_IN_PREREQUISITE_STATE = "55000"  # an error class: "no data" (02000) is a completion condition
FEATURE_NOT_SUPPORTED = "0A000"
MODIFYING_SQL_DATA_NOT_PERMITTED = "2F002"
