"""What the node and the central receiver share: message contract, outbox, relay, loyalty rules.

paho-mqtt is imported here, once, without dnspython. paho 2.x imports dnspython at import time when it is
installed (it is: email-validator depends on it), only for ``Client.connect_srv`` (DNS SRV lookups), which
nothing here uses. That import cost the node 4.6 MB of its 60 MB budget (dnspython's 56 modules and what
they pull in). With ``dns`` hidden while paho's client module loads, paho takes its own documented fallback
(``HAVE_DNS = False``); ``dns`` is importable again right after, for anyone who needs it.
"""

import sys

if "paho.mqtt.client" not in sys.modules and "dns" not in sys.modules:
    sys.modules["dns"] = None  # type: ignore[assignment]  # "import dns..." raises ImportError meanwhile
    try:
        import paho.mqtt.client  # noqa: F401
    finally:
        del sys.modules["dns"]
