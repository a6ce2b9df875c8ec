"""The central receiver (``kiosk-central``): ingest, ledger, vault and reports for the whole chain."""
