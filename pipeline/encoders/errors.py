"""The encoders' errors: rows that cannot be encoded as the source asks.

They are permanent (hdfswatch.errors.PermanentError): an encoder is a pure function of the rows,
so the same rows fail the same way on every try and the file is quarantined at once.
"""

from __future__ import annotations

from hdfswatch.errors import PermanentError


class EncodeError(PermanentError, ValueError):
    """Rows that cannot be encoded as the source asks (a value with no form in the value format,
    a key column missing, a schema with no Avro form). Retrying will not help: quarantine the
    file, or change the source's value format or keys."""
