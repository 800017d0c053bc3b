"""ipywidgets sweeps: rerun ragopt with other settings and watch the figure update in place.

``sweep_panel(corpus)`` builds a panel of controls (LLM concurrency K, parse
cache on/off, simulator latency preset, 429 fault rate), a Run button and a
plotly ``FigureWidget``. Each click calls ``run_point(settings)``, a plain
function that profiles one ragopt ingestion of the corpus with those settings
(in this process with ``ragopt.measure.experiments.profile``, or in a fresh process
with ``run_isolated``) and returns its headline figures as a dict; the panel
appends the result to ``panel.results`` and updates the figure's traces.

Nothing here needs a browser: ``panel.run()`` (or ``panel.button.click()``)
takes the same path as a click, so tests drive it headless and read
``panel.figure.data``.
"""

from __future__ import annotations

import tempfile
import traceback
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional

import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from ragopt.config import RagoptConfig

# The settings a sweep point takes, and their defaults.
DEFAULT_SETTINGS: Dict[str, Any] = {
    "concurrency": 8,  # the simulator's K slots and MAX_CONCURRENT_PROCESSING
    "cache": True,  # ENABLE_PARSE_CACHE
    "preset": "default",  # simulator latency preset
    "rate_429": 0.0,  # fraction of LLM requests answered with HTTP 429
}
# Figures of a run that a sweep point reports.
POINT_FIGURES = (
    "docs_total", "docs_ok", "docs_failed", "wall_s", "docs_per_min", "wall_over_limit", "llm_slots",
    "llm_max_in_flight", "llm_calls", "llm_calls_failed", "llm_slot_utilization", "parse_cache_hit_rate",
    "peak_rss_mb", "simulated_llm",
)
SIMULATED_NOTE = "simulated LLM service"


def presets() -> List[str]:
    """The simulator's latency presets."""
    from ragopt.backends.llm_sim import PRESETS

    return sorted(PRESETS)


def point_config(settings: Dict[str, Any], base: Optional[RagoptConfig] = None) -> RagoptConfig:
    """The RagoptConfig of one sweep point: ``base`` with the point's settings applied.

    ``concurrency`` sets both the simulator's slots (K) and the LLM requests
    ragopt keeps in flight; ``cache_dir`` (optional) is a parse-cache folder
    shared by the points of a sweep, so a rerun with the cache on can hit.
    """
    settings = {**DEFAULT_SETTINGS, **settings}
    base = base or RagoptConfig.from_env()
    slots = int(settings["concurrency"])
    changes: Dict[str, Any] = {
        "max_concurrent_processing": slots,
        "enable_parse_cache": bool(settings["cache"]),
        "sim_preset": str(settings["preset"]),
        "sim_rate_429": float(settings["rate_429"]),
    }
    if settings.get("cache_dir"):
        changes["cache_storage"] = str(settings["cache_dir"])
    return base.replace(**changes)


def run_point(settings: Dict[str, Any]) -> Dict[str, Any]:
    """Profile one ragopt ingestion with ``settings``; its headline figures as a dict.

    ``settings``: ``corpus`` (required), ``concurrency``, ``cache``, ``preset``,
    ``rate_429`` (see ``DEFAULT_SETTINGS``), and optionally ``cache_dir``,
    ``base`` (a RagoptConfig to start from), ``isolated`` (run in a fresh
    process; then ``out_dir`` receives the run record). The result holds the
    settings, the figures in ``POINT_FIGURES`` and ``record`` (the run
    record's path, or None for an in-process run).
    """
    from ragopt.measure.experiments import profile, run_isolated

    settings = {**DEFAULT_SETTINGS, **settings}
    if not settings.get("corpus"):
        raise ValueError("run_point needs settings['corpus']")
    corpus = Path(settings["corpus"])
    config = point_config(settings, settings.get("base"))
    label = _point_label(settings)
    record = None
    if settings.get("isolated"):
        out_dir = Path(settings.get("out_dir") or tempfile.mkdtemp(prefix="ragopt-sweep-"))
        slug = "".join(c if c.isalnum() else "_" for c in label).strip("_")
        record = out_dir / f"sweep_{slug}.json"
        run = run_isolated("ragopt", corpus, record, config)
    else:
        run = profile("ragopt", corpus, config, label=label)
    summary = run.summary()
    point = {key: settings[key] for key in DEFAULT_SETTINGS}
    point.update({key: summary.get(key) for key in POINT_FIGURES})
    point.update(label=label, series=_series_label(settings), record=None if record is None else str(record))
    return point


def _point_label(settings: Dict[str, Any]) -> str:
    return f"K={int(settings['concurrency'])}, {_series_label(settings)}"


def _series_label(settings: Dict[str, Any]) -> str:
    """Points that differ only in concurrency form one line of the figure."""
    cache = "cache on" if settings["cache"] else "cache off"
    return f"{settings['preset']}, {cache}, 429 rate {float(settings['rate_429']):g}"


def _new_figure():
    """A FigureWidget (updated in place in Jupyter); a plain Figure where anywidget is missing."""
    layout = make_subplots(rows=1, cols=2, subplot_titles=("throughput (docs/min)", "wall / LLM-bound limit"))
    try:
        figure = go.FigureWidget(layout)
    except ImportError:  # plotly's FigureWidget needs the anywidget package
        figure = go.Figure(layout)
    figure.update_layout(title="Concurrency sweep: run a point to start", height=420)
    figure.update_xaxes(title_text="LLM concurrency K (slots)")
    figure.update_yaxes(title_text="docs/min", row=1, col=1)
    figure.update_yaxes(title_text="wall / limit (1.0 = LLM-bound)", row=1, col=2)
    return figure


class SweepPanel:
    """Controls, a Run button and a figure that each run updates in place.

    ``runner`` is called with the settings dict (default ``run_point``); a
    test can pass a fast stand-in. ``results`` is a DataFrame of every point
    run so far.
    """

    def __init__(
        self,
        corpus: str | Path,
        base: Optional[RagoptConfig] = None,
        runner: Callable[[Dict[str, Any]], Dict[str, Any]] = run_point,
        isolated: bool = False,
        out_dir: Optional[str | Path] = None,
        cache_dir: Optional[str | Path] = None,
        **initial: Any,
    ):
        import ipywidgets as widgets

        self.corpus = Path(corpus)
        self.base = base
        self.runner = runner
        self.isolated = isolated
        self.out_dir = out_dir
        # One parse-cache folder for the whole sweep: with the cache on, a rerun hits it.
        self.cache_dir = Path(cache_dir or tempfile.mkdtemp(prefix="ragopt-sweep-cache-"))
        start = dict(DEFAULT_SETTINGS)
        if base is not None:
            start.update(preset=base.sim_preset, rate_429=base.sim_rate_429)
        start.update(initial)
        self._points: List[Dict[str, Any]] = []
        self.last_error: Optional[str] = None

        style = {"description_width": "150px"}
        self.concurrency = widgets.IntSlider(value=int(start["concurrency"]), min=1, max=64, description="LLM slots K", style=style)
        self.cache = widgets.Checkbox(value=bool(start["cache"]), description="parse cache", style=style)
        self.preset = widgets.Dropdown(options=presets(), value=start["preset"], description="latency preset", style=style)
        self.rate_429 = widgets.FloatSlider(
            value=float(start["rate_429"]), min=0.0, max=0.5, step=0.01, description="429 fault rate", style=style
        )
        self.button = widgets.Button(description="Run", button_style="primary", icon="play")
        self.status = widgets.HTML(value="Set the knobs and press Run: each run ingests the corpus once with ragopt.")
        self.figure = _new_figure()
        self.output = widgets.Output()  # errors, and the figure where it is not a widget
        self.button.on_click(self._on_click)
        figure_box = [self.figure] if isinstance(self.figure, go.FigureWidget) else []
        self.widget = widgets.VBox([
            widgets.HBox([widgets.VBox([self.concurrency, self.cache]), widgets.VBox([self.preset, self.rate_429])]),
            widgets.HBox([self.button, self.status]),
            *figure_box,
            self.output,
        ])

    # -- settings and runs ------------------------------------------------------
    def settings(self) -> Dict[str, Any]:
        """The settings the controls show now, ready for ``run_point``."""
        return {
            "corpus": str(self.corpus),
            "concurrency": self.concurrency.value,
            "cache": self.cache.value,
            "preset": self.preset.value,
            "rate_429": self.rate_429.value,
            "cache_dir": str(self.cache_dir),
            "base": self.base,
            "isolated": self.isolated,
            "out_dir": None if self.out_dir is None else str(self.out_dir),
        }

    def set(self, **settings: Any) -> "SweepPanel":
        """Move the controls (concurrency, cache, preset, rate_429), as a user would."""
        for name, value in settings.items():
            getattr(self, name).value = value
        return self

    def run(self, **settings: Any) -> Dict[str, Any]:
        """Run one point with the controls' settings (moved first by ``settings``) and update the figure."""
        self.set(**settings)
        point_settings = self.settings()
        self.status.value = f"running {_point_label({**DEFAULT_SETTINGS, **point_settings})} ..."
        self.button.disabled = True
        try:
            point = self.runner(point_settings)
        finally:
            self.button.disabled = False
        self._points.append(point)
        self.update_figure()
        shown = point.get("docs_per_min")
        self.status.value = (
            f"{point.get('label', '')}: {shown:.3g} docs/min, {point.get('docs_ok')} of {point.get('docs_total')} documents ok"
            if isinstance(shown, (int, float)) else f"{point.get('label', '')}: no throughput measured"
        )
        return point

    def _on_click(self, _button: Any = None) -> None:
        """The button's callback: run one point; a failure is shown under the panel and kept in ``last_error``."""
        self.last_error = None
        try:
            self.run()
        except Exception:  # a failed point must not kill the widget
            self.last_error = traceback.format_exc()
            self.status.value = "<b>run failed</b> (see below)"
            with self.output:
                print(self.last_error)

    @property
    def points(self) -> List[Dict[str, Any]]:
        """Every point run so far, as the dicts the runner returned."""
        return [dict(point) for point in self._points]

    @property
    def results(self) -> pd.DataFrame:
        """Every point run so far, one row each."""
        return pd.DataFrame(self._points)

    # -- figure -------------------------------------------------------------------
    def update_figure(self) -> None:
        """One line per series (preset, cache, fault rate) over concurrency, in both panels.

        A series' traces are updated in place; a new series adds its traces.
        """
        results = self.results
        figure = self.figure
        simulated = bool(len(results)) and bool(results["simulated_llm"].fillna(False).any())
        title = "Concurrency sweep: ragopt on " + self.corpus.name
        figure.update_layout(title=f"{title} ({SIMULATED_NOTE})" if simulated else title)
        for series, points in results.groupby("series", sort=False):
            points = points.sort_values("concurrency")
            traces = [trace for trace in figure.data if trace.legendgroup == series]
            if not traces:
                color = _color(len(figure.data) // 2)
                for col in (1, 2):
                    figure.add_scatter(
                        x=[], y=[], mode="lines+markers", name=series, legendgroup=series, showlegend=col == 1,
                        marker={"color": color}, line={"color": color}, row=1, col=col,
                    )
                traces = figure.data[-2:]
            for trace, column in zip(traces, ("docs_per_min", "wall_over_limit")):
                trace.x = list(points["concurrency"])
                trace.y = [None if pd.isna(v) else float(v) for v in points[column]]
        if not isinstance(figure, go.FigureWidget):
            from IPython.display import display

            self.output.clear_output(wait=True)
            with self.output:
                display(figure)

    def _ipython_display_(self) -> None:
        from IPython.display import display

        display(self.widget)


def _color(index: int) -> str:
    import plotly.colors

    palette = plotly.colors.qualitative.Plotly
    return palette[index % len(palette)]


def sweep_panel(corpus: str | Path, **kwargs: Any) -> SweepPanel:
    """A ``SweepPanel`` over ``corpus``; display it in a notebook cell to use it."""
    return SweepPanel(corpus, **kwargs)
