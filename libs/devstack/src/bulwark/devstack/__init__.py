"""Run the whole Bulwark stack on one machine.

Embedded Postgres and Redis when no URLs are given (``embedded``), one database per service
(``databases``), the three services as supervised processes (``stack``), a local SMTP sink
and its mail folder (``mail``, ``mailbox``), the ``bulwark-dev`` command line and its
scripted mobile client (``cli``, ``demo``, ``mailview``).
"""
