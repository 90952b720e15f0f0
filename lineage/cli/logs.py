"""Log set-up for the command line: one line per event, and the Hub client's retry chatter once."""

from __future__ import annotations

import logging


class RetryOnce(logging.Filter):
    """Let the first retry warning of ``huggingface_hub`` through, marked, and drop the rest.

    Its backoff logs two lines per attempt ("HTTP Error 503 thrown while requesting ...", "Retrying in
    4s [Retry 3/5]"); during a 5xx storm that is a dozen lines before the one error that matters.
    """

    def __init__(self) -> None:
        super().__init__()
        self.shown = False

    def filter(self, record: logging.LogRecord) -> bool:
        if not record.name.startswith("huggingface_hub"):
            return True
        msg = record.getMessage()
        if msg.startswith("HTTP Error") or " thrown while requesting " in msg:
            return False
        if msg.startswith("Retrying in"):
            if self.shown:
                return False
            self.shown = True
            record.msg, record.args = f"the Hub is failing; {msg} (later retries not shown; -v shows them)", None
        return True


def configure(verbose: int) -> None:
    """Root logging at WARNING (-v: INFO, -vv: DEBUG); below -v the Hub client's retries print once."""
    level = logging.WARNING if verbose == 0 else logging.INFO if verbose == 1 else logging.DEBUG
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
    import huggingface_hub.utils.logging  # noqa: F401 (14 ms; it adds its handler on import: remove it after)

    hf = logging.getLogger("huggingface_hub")
    for h in list(hf.handlers):  # its own stderr handler repeats what the root handler prints
        if type(h) is logging.StreamHandler and getattr(h.stream, "name", None) == "<stderr>":
            hf.removeHandler(h)
    if verbose == 0:
        for h in logging.getLogger().handlers:
            if not any(isinstance(f, RetryOnce) for f in h.filters):
                h.addFilter(RetryOnce())
