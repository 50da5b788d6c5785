"""Secret settings: values that are never shown, and the files they may be read from.

A secret setting (`daemon.admin_token`, Kafka's `sasl.password`, the password of
`sasl.jaas.config`, `ssl.key.password`) is written inline or as a reference, read when the
config is loaded and again at every reload, so the TOML itself need not be secret:

    "${file:/etc/hdfs2kafka/kafka.pass}"                 the whole file, trailing newline removed
    "${file:/etc/hdfs2kafka/secrets.properties:sasl.password}"  one key of a .properties file,
                                                         as Kafka's FileConfigProvider reads it
    "${credential:kafka-password}"                       a systemd credential:
                                                         $CREDENTIALS_DIRECTORY/kafka-password

Its value is a `Secret`: a str (so aiokafka and ssl take it as the password it is) whose
`str()`, `repr()` and f-string formatting are `***`; `reveal()` gives the plain text to the
one place that needs it. What still reaches a log line or an HTTP answer as text (a library's
message, an exception's, a URL) passes through `scrub`/`redact`, which replace every secret the
process has loaded and anything written like `password=...`.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

MASK = "***"
CREDENTIALS_ENV = "CREDENTIALS_DIRECTORY"
REFERENCE = re.compile(r"^\$\{(file|credential):(.+)\}$")
_MIN_SCRUBBED = 4  # shorter values are hidden where typed, but not searched for in free text

# Every secret value this process has loaded. Process-wide on purpose: a log line can come from
# any library, long after the config that held the value, and must still not show it.
_KNOWN: set[str] = set()


class Secret(str):
    """A secret string: its characters are the secret, its text forms are `***`."""

    origin: str

    def __new__(cls, value: str, origin: str = "inline") -> Secret:
        self = super().__new__(cls, value)
        self.origin = origin  # "inline", "file PATH" or "credential NAME": shown by check-config
        if len(value) >= _MIN_SCRUBBED:
            _KNOWN.add(value)
        return self

    def reveal(self) -> str:
        """The plain text, for the place that hands it over (a header, a library's argument)."""
        return str.__str__(self)

    def __str__(self) -> str:
        return MASK

    def __repr__(self) -> str:
        return repr(MASK)

    def __format__(self, spec: str) -> str:
        return format(MASK, spec)

    def __reduce__(self) -> tuple[Any, ...]:
        return (Secret, (self.reveal(), self.origin))


class SecretUnreadable(ValueError):
    """A `${file:...}` or `${credential:...}` reference that cannot be read; the message names
    the path or credential, never a value."""


def is_reference(text: str) -> bool:
    return bool(REFERENCE.match(text))


def resolve(text: str, base: Path, env: Mapping[str, str] | None = None) -> Secret:
    """The Secret a setting's text stands for: a reference read now, or the text itself.

    Raises SecretUnreadable when the file or credential cannot be read or is empty.
    """
    m = REFERENCE.match(text)
    if not m:
        return Secret(text)
    kind, arg = m.groups()
    if kind == "credential":
        env = os.environ if env is None else env
        if "/" in arg or arg in (".", ".."):
            raise SecretUnreadable(f"{arg!r} is not a systemd credential name (no '/')")
        directory = env.get(CREDENTIALS_ENV)
        if not directory:
            raise SecretUnreadable(
                f"names the systemd credential {arg!r}, but ${CREDENTIALS_ENV} is not set: systemd "
                f"sets it for a unit with LoadCredential={arg}:/path/to/file (or use ${{file:PATH}})")
        path = Path(directory) / arg
        if not path.exists():
            raise SecretUnreadable(
                f"the systemd credential {arg!r} is not in ${CREDENTIALS_ENV} ({directory}): add "
                f"LoadCredential={arg}:/path/to/file to the unit")
        return Secret(_read(path, f"credential {arg!r} ({path})"), f"credential {arg}")
    path_text, key = arg, None
    head, sep, tail = arg.rpartition(":")
    if sep and head and "/" not in tail:  # ${file:PATH:KEY}, as Kafka's FileConfigProvider
        path_text, key = head, tail
    path = Path(path_text) if Path(path_text).is_absolute() else base / path_text
    if key is None:
        return Secret(_read(path, f"file {path}"), f"file {path}")
    props = parse_properties(_read(path, f"file {path}", strip=False))
    if key not in props:
        raise SecretUnreadable(f"file {path} has no key {key!r}")
    if not props[key]:
        raise SecretUnreadable(f"key {key!r} of file {path} is empty")
    return Secret(props[key], f"file {path} key {key}")


def _read(path: Path, what: str, strip: bool = True) -> str:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise SecretUnreadable(f"{what}: no such file") from None
    except IsADirectoryError:
        raise SecretUnreadable(f"{what}: a directory, not a file") from None
    except PermissionError:
        raise SecretUnreadable(f"{what}: permission denied (readable by the daemon's user?)") from None
    except OSError as exc:
        raise SecretUnreadable(f"{what}: cannot read: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise SecretUnreadable(f"{what}: not UTF-8 text") from None
    if strip:
        text = text.rstrip("\r\n")  # `echo secret > file` adds one; spaces stay part of it
        if not text:
            raise SecretUnreadable(f"{what}: empty")
    return text


def parse_properties(text: str) -> dict[str, str]:
    """Java .properties text (the subset client.properties files use: key=value, # comments)."""
    props: dict[str, str] = {}
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith(("#", "!")):
            continue
        key, _, value = line.partition("=") if "=" in line else line.partition(":")
        props[key.strip()] = value.strip()
    return props


# --------------------------------------------------------------------------- redaction

_SECRET_WORDS = r"(?:password|passwd|pwd|secret|token|delegation|credentials?_?key|api_?key)"
# key=value, key = "value", key='value' (JAAS, properties, query strings, command lines)
_ASSIGNED = re.compile(
    rf"""(?ix)(\b[\w.-]*{_SECRET_WORDS}["']?\s*=\s*)("[^"]*"|'[^']*'|[^\s"',;&)}}\]]+)""")
# "key": "value" (JSON, dict reprs)
_QUOTED = re.compile(rf"""(?ix)(["'][\w.-]*{_SECRET_WORDS}["']\s*:\s*)("(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*')""")
_BEARER = re.compile(r"(?i)\b(Bearer|Basic|Negotiate)(\s+)([A-Za-z0-9._~+/-]{8,}=*)")
_USERINFO = re.compile(r"(?i)(\b[a-z][a-z0-9+.-]*://[^/\s:@]+:)[^/\s@]+@")
_SECRET_KEY = re.compile(rf"(?i){_SECRET_WORDS}|jaas|authorization")


def scrub(text: str) -> str:
    """`text` with every loaded secret, and anything that looks like one, replaced by ***."""
    for value in sorted(_KNOWN, key=len, reverse=True):
        if value in text:
            text = text.replace(value, MASK)
    text = _ASSIGNED.sub(lambda m: m.group(1) + _masked_like(m.group(2)), text)
    text = _QUOTED.sub(lambda m: m.group(1) + _masked_like(m.group(2)), text)
    text = _BEARER.sub(lambda m: m.group(1) + m.group(2) + MASK, text)
    return _USERINFO.sub(lambda m: m.group(1) + MASK + "@", text)


def _masked_like(value: str) -> str:
    if value[:1] in ("'", '"'):
        return value[0] + MASK + value[0]
    return MASK


def redact(value: Any, key: str = "") -> Any:
    """A copy of a log event's value (or an HTTP document) with secrets masked: Secret values,
    the text of fields named like a secret (`password`, `token`, `authorization`...), and
    secrets inside any other text."""
    if isinstance(value, Secret):
        return MASK
    if isinstance(value, str):
        if key and _SECRET_KEY.search(key) and value:
            return MASK
        return scrub(value)
    if isinstance(value, Mapping):
        return {k: redact(v, k if isinstance(k, str) else "") for k, v in value.items()}
    if isinstance(value, list):
        return [redact(v) for v in value]
    if isinstance(value, tuple):
        return tuple(redact(v) for v in value)
    if isinstance(value, BaseException):
        return scrub(f"{type(value).__name__}: {value}")
    return value
