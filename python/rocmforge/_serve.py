"""``rocmforge.serve``: run the OpenAI-compatible server (``rocmforge.Server``) until Ctrl-C or
SIGTERM, then stop it cleanly."""

from __future__ import annotations

import os
import signal
import sys
import threading
from typing import Any, Dict, Literal, Optional, Union

from ._rocmforge import Server


def serve(
    path: Union[str, "os.PathLike[str]", None] = None,
    host: str = "127.0.0.1",
    port: int = 8000,
    device: str = "auto",
    n_ctx: Optional[int] = None,
    api_key: Optional[str] = None,
    queue_size: int = 16,
    seed: Optional[int] = None,
    kv_dtype: Optional[Literal["f32", "f16"]] = None,
    tuning: Optional[Dict[str, Any]] = None,
    model_name: Optional[str] = None,
    verbose: bool = True,
    max_batch: int = 8,
) -> None:
    """Serve a model over the OpenAI protocol until Ctrl-C or SIGTERM; blocks.

    The arguments are those of `rocmforge.Server` (path None: the default model; host
    "127.0.0.1": this machine only; api_key: require `Authorization: Bearer <key>`). Clients
    talk to `http://HOST:PORT/v1`, e.g. the `openai` package's
    `OpenAI(base_url="http://127.0.0.1:8000/v1", api_key="-")`.

    Up to `max_batch` requests run at once (continuous batching); others wait in arrival
    order. Ctrl-C (or SIGTERM, when called
    from the main thread) stops accepting requests, gives the running ones up to 10 seconds
    to finish, and returns; a second Ctrl-C cancels them at once (KeyboardInterrupt).
    verbose: a progress bar while loading and a line on stderr when serving starts and stops.
    """
    server = Server(path, host=host, port=port, device=device, n_ctx=n_ctx, api_key=api_key,
                    queue_size=queue_size, seed=seed, kv_dtype=kv_dtype, tuning=tuning,
                    model_name=model_name, verbose=verbose, max_batch=max_batch)
    with _sigterm_as_interrupt():
        server.start()
        if verbose:
            print(f"rocmforge: serving {server.model} on {server.url}/v1 (Ctrl-C stops)",
                  file=sys.stderr, flush=True)
        try:
            server.wait()
        except KeyboardInterrupt:
            if verbose:
                print("rocmforge: stopping", file=sys.stderr, flush=True)
        finally:
            server.stop()


class _sigterm_as_interrupt:
    """Within the block, SIGTERM raises KeyboardInterrupt (main thread only; elsewhere Python
    cannot set signal handlers, and the block changes nothing)."""

    def __enter__(self) -> None:
        self.previous: Any = None
        self.installed = threading.current_thread() is threading.main_thread()
        if self.installed:
            self.previous = signal.signal(signal.SIGTERM, _raise_interrupt)

    def __exit__(self, *exc: Any) -> None:
        if self.installed:
            signal.signal(signal.SIGTERM, self.previous)


def _raise_interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt
