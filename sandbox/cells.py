"""Jupyter-style cells in a live worker's interpreter (kernel mode).

A cell runs like IPython runs one: the value of its last expression is sent back as `execute_result`,
figures it shows or leaves open become `display_data` (PNG), and an exception becomes an `error` message
instead of a traceback on stderr. Every message goes to the server on the control socket; print output
still goes through the worker's stdout and stderr connections.
"""

from __future__ import annotations

import ast
import base64
import io
import linecache
import sys
import traceback
import types
from typing import Any, Callable

import runners

Send = Callable[[dict], None]
# One WebSocket message must stay under 1 MiB (Open WebUI's client drops every output of a run after a
# bigger one): an image whose base64 would pass this is drawn again smaller, then replaced by a note.
MAX_IMAGE_BASE64 = 900_000
MAX_TEXT_REPR = 256 * 1024


def mime_bundle(value: Any) -> dict[str, str]:
    """What Jupyter shows for a value: its repr, plus HTML or PNG where the value offers them."""
    data: dict[str, str] = {}
    try:
        text = repr(value)
    except Exception as error:  # noqa: BLE001 - a broken __repr__ is the cell's own problem
        text = f"<repr failed: {type(error).__name__}: {error}>"
    data["text/plain"] = text[:MAX_TEXT_REPR]
    html = getattr(value, "_repr_html_", None)
    if callable(html) and not isinstance(value, type):
        try:
            rendered = html()
            if isinstance(rendered, str) and len(rendered) <= MAX_TEXT_REPR:
                data["text/html"] = rendered
        except Exception:  # noqa: BLE001
            pass
    return data


def _figure_png(figure: Any) -> str | None:
    dpi = float(figure.get_dpi())
    for _ in range(4):
        buffer = io.BytesIO()
        figure.savefig(buffer, format="png", dpi=dpi, bbox_inches="tight")
        encoded = base64.b64encode(buffer.getvalue()).decode("ascii")
        if len(encoded) <= MAX_IMAGE_BASE64:
            return encoded
        dpi /= 2
    return None


def send_open_figures(send: Send) -> None:
    """Every open matplotlib figure as display_data (image/png, base64 without newlines), then closed."""
    pyplot = sys.modules.get("matplotlib.pyplot")
    if pyplot is None:
        return
    for number in list(pyplot.get_fignums()):
        figure = pyplot.figure(number)
        width, height = figure.get_size_inches() * figure.get_dpi()
        text = f"<Figure size {int(width)}x{int(height)} with {len(figure.axes)} Axes>"
        try:
            encoded = _figure_png(figure)
        except Exception as error:  # noqa: BLE001 - a figure that cannot be drawn is reported, not fatal
            encoded = None
            text += f" (could not be drawn: {type(error).__name__}: {error})"
        data = {"text/plain": text} if encoded is None else {"image/png": encoded, "text/plain": text}
        if encoded is None and "could not" not in text:
            data["text/plain"] += " (too large to show even when drawn smaller)"
        send({"type": "display_data", "data": data, "metadata": {}})
        pyplot.close(figure)


def install_display_hooks(send: Send) -> None:
    """`plt.show()` shows the figures now, as in a notebook, instead of doing nothing (Agg)."""
    pyplot = sys.modules.get("matplotlib.pyplot")
    if pyplot is not None and not getattr(pyplot.show, "_warden", False):
        def show(*_args: Any, **_kwargs: Any) -> None:
            runners.flush_std_streams()
            send_open_figures(send)

        show._warden = True  # type: ignore[attr-defined]
        pyplot.show = show


def _error_message(error: BaseException) -> dict:
    tb = error.__traceback__
    # the cell's own frames only: not this module's, nor runners' (run_code)
    while tb is not None and tb.tb_frame.f_code.co_filename in (__file__, runners.__file__):
        tb = tb.tb_next
    lines = traceback.format_exception(type(error), error, tb)
    return {
        "type": "error",
        "ename": type(error).__name__,
        "evalue": str(error),
        "traceback": [line.rstrip("\n") for line in "".join(lines).splitlines()],
    }


def run_cell(code: str, main: types.ModuleType, interrupts: runners.Interrupts, send: Send, execution_count: int) -> runners.RunOutcome:
    filename = f"<cell {execution_count}>"
    linecache.cache[filename] = (len(code), None, code.splitlines(True), filename)
    sys.modules["__main__"] = main
    install_display_hooks(send)
    outcome = runners.RunOutcome(exit_code=0)
    try:
        tree = ast.parse(code, filename, "exec")
        last = tree.body.pop() if tree.body and isinstance(tree.body[-1], ast.Expr) else None
        body = compile(tree, filename, "exec", flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT)
        expression = None if last is None else compile(ast.Expression(last.value), filename, "eval", flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT)
        interrupts.python_running = True
        try:
            runners.run_code(body, main.__dict__)
            value = None if expression is None else runners.run_code(expression, main.__dict__)
        finally:
            interrupts.python_running = False
        if value is not None:
            main.__dict__["_"] = value
            runners.flush_std_streams()
            send({"type": "execute_result", "data": mime_bundle(value), "metadata": {}})
    except SystemExit as stop:
        outcome.exit_code = runners.system_exit_code(stop)
    except BaseException as error:  # noqa: BLE001 - the cell's exception is its outcome
        outcome.interrupted = isinstance(error, KeyboardInterrupt)
        outcome.exit_code = 1
        runners.flush_std_streams()
        # a SyntaxError has no frame of the cell; any other error skips this file's frames
        send(_error_message(error))
    runners.flush_std_streams()
    try:
        send_open_figures(send)
    except Exception:  # noqa: BLE001
        pass
    return outcome
