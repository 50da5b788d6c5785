"""The daemon's Kerberos identity, one for the whole process.

Every GSSAPI client in the daemon — the NameNode's SASL (hdfswatch.kerberos), WebHDFS's SPNEGO
and Kafka's GSSAPI (aiokafka) — takes the default credentials of MIT krb5. With a keytab in
`[kerberos]` the daemon points those defaults at a ticket cache of its own in memory
(`KRB5CCNAME=MEMORY:...`) and at the keytab as the client keytab (`KRB5_CLIENT_KTNAME`): MIT
krb5 then gets the first ticket from the keytab, and a new one whenever the cached one is
expired or near its end, on every connection, with no kinit cron. Without a keytab, the ticket
cache of the environment ($KRB5CCNAME, kept fresh by the operator) is used as it is.

`login` runs at the start of each life of the daemon: it checks that a ticket can be had now,
so that a missing or wrong keytab, an unknown principal, clock skew or an unreachable KDC is a
single line naming the fix before any connection is tried.
"""

from __future__ import annotations

import os
from collections.abc import MutableMapping

from pipeline.config import KerberosConfig

CCACHE = "MEMORY:hdfs2kafka"
logged_in: str | None = None
"""The principal of the last successful `login` of this process."""


def configure(kerberos: KerberosConfig, env: MutableMapping[str, str] | None = None) -> bool:
    """Point the process's Kerberos defaults at the daemon's keytab; False when there is none
    (the environment's ticket cache is used)."""
    env = os.environ if env is None else env
    if not kerberos.keytab:
        return False
    keytab = kerberos.keytab
    wanted = {"KRB5_CLIENT_KTNAME": keytab if ":" in keytab.split("/")[0] else f"FILE:{keytab}",
              "KRB5CCNAME": CCACHE}
    for key, value in wanted.items():
        if env.get(key) != value:  # set once: later lives change nothing other threads read
            env[key] = value
    return True


def login(kerberos: KerberosConfig) -> str:
    """Get (or check) the daemon's ticket now; returns the principal it stands for.

    Raises the typed errors of `hdfswatch.errors` (each a line naming what to fix): transient
    ones (no ticket, expired, KDC away, clock skew) are retried by the daemon's life loop.
    """
    from hdfswatch.kerberos import _gssapi, gss_error

    gssapi = _gssapi()
    keyed = configure(kerberos)
    who = kerberos.principal or ("the keytab's principal" if keyed else "the ticket cache's principal")
    try:
        name = (gssapi.Name(kerberos.principal, gssapi.NameType.kerberos_principal)
                if kerberos.principal else None)
        if keyed:
            store = {"client_keytab": os.environ["KRB5_CLIENT_KTNAME"], "ccache": CCACHE}
            creds = gssapi.Credentials(name=name, usage="initiate", store=store)
        else:
            creds = gssapi.Credentials(name=name, usage="initiate")
        lifetime = creds.lifetime
        principal = str(creds.name)
    except gssapi.exceptions.GSSError as exc:
        raise gss_error(exc, client=f"{who}" + (f" (keytab {kerberos.keytab})" if keyed else "")) from None
    if lifetime is not None and lifetime <= 0:
        from hdfswatch.errors import KerberosCredentialsError

        raise KerberosCredentialsError(f"the Kerberos ticket of {principal} has expired: renew it "
                                       "(kinit), or set [kerberos] keytab so the daemon renews it")
    global logged_in
    logged_in = principal
    return principal
