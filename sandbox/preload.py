"""What the zygote does once, so that every forked worker starts warm: import the data stack and draw a plot."""

from __future__ import annotations

import gc
import io
import os
import shutil

# a matplotlib font cache built into the image (Dockerfile): copied into the zygote's writable config
# dir, it saves the ~1 s matplotlib otherwise spends scanning fonts at every zygote start
PREBUILT_MATPLOTLIB_CACHE = "/usr/local/share/warden/matplotlib"


def preload(modules: list[str]) -> None:
    """Import the data stack once, so that every forked worker starts with it loaded."""
    for name in modules:
        __import__(name)
    if "pandas" in modules:
        import pandas

        pandas.DataFrame({"a": [1, 2]}).describe()
    if "matplotlib" in modules:
        warm_plotting(with_pandas="pandas" in modules)


def warm_plotting(with_pandas: bool) -> None:
    """Draw one small plot with text into a PNG in memory.

    The first plot of a process loads pandas' plotting module, the text layout and the PNG writer: about
    20 ms of every worker's first `savefig`, paid here once instead.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.font_manager
    import matplotlib.pyplot as plt

    # A cached font keeps its file open, and a worker closes every descriptor it did not get from the
    # server: a font cached here would then be read through a closed (or reused) descriptor. Warm up only
    # where the cache can be emptied again (a private matplotlib API, so checked, not assumed).
    clear_font_cache = getattr(getattr(matplotlib.font_manager, "_get_font", None), "cache_clear", None)
    if clear_font_cache is None:
        return
    try:
        figure, axes = plt.subplots()
        if with_pandas:
            import pandas

            pandas.DataFrame({"a": [1, 2]}).plot(ax=axes, title="warm")
        else:
            axes.plot([1, 2])
            axes.set_title("warm")
        figure.savefig(io.BytesIO(), format="png")
    finally:
        plt.close("all")
        clear_font_cache()
        gc.collect()


def seed_matplotlib_cache(config_dir: str) -> None:
    if not os.path.isdir(PREBUILT_MATPLOTLIB_CACHE):
        return
    for name in os.listdir(PREBUILT_MATPLOTLIB_CACHE):
        if name.startswith("fontlist") and name.endswith(".json"):
            shutil.copyfile(os.path.join(PREBUILT_MATPLOTLIB_CACHE, name), os.path.join(config_dir, name))
