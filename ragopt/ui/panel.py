"""The live notebook panel: ``ragopt.watch(rag)`` shows a run's numbers and charts updating in place.

``with ragopt.watch(rag): ingest(rag, paths)`` attaches a ``LiveMetrics`` to
the rag and shows an ipywidgets panel (the numbers) over a plotly
``FigureWidget`` (documents done, LLM requests in a slot against K, tokens/s,
CPU and RSS), refreshed from a thread every ``interval_s`` while ``ingest``
runs in the same kernel. When the block ends the widgets close and a static
figure of the whole run is left in the output, so an exported notebook keeps
it. ``panel.shown`` is every set of numbers the panel showed.
"""

from __future__ import annotations

import html
import threading
from typing import Any, Dict, List, Optional

import plotly.graph_objects as go
from plotly.subplots import make_subplots

from ragopt.measure.live import LiveMetrics
from ragopt.ui.plots import SIMULATED_NOTE

# (numbers key, label); the first four are the original guide's headline numbers.
NUMBERS = (
    ("cpu_pct", "CPU % of all cores"), ("rss_mb", "RSS (MB)"), ("docs_per_min", "docs/min (last minute)"),
    ("parse_cache_hit_rate", "parse cache hit rate"), ("llm_cache_hit_rate", "LLM cache hit rate"),
    ("llm_in_flight", "LLM requests in a slot"), ("llm_slots", "K slots"), ("tokens_per_s", "tokens/s"),
    ("llm_errors", "LLM errors"), ("docs_ok", "documents done"), ("docs_failed", "failed"),
    ("docs_in_flight", "in flight"), ("llm_calls", "LLM requests"), ("embedding_calls", "embedding calls"),
    ("storage_flushes", "storage flushes"),
)
# (row, col, numbers key, trace name)
SERIES = ((1, 1, "docs_ok", "documents done"), (1, 2, "llm_in_flight", "LLM requests in a slot"),
          (2, 1, "tokens_per_s", "tokens/s"), (2, 2, "cpu_pct", "CPU %"), (2, 2, "rss_mb", "RSS MB"))
TITLES = ("documents done", "LLM requests in a slot (dashed: K)", "LLM tokens/s, last minute", "CPU % and RSS (MB)")


def _shown(value: Any, key: str) -> str:
    if value is None:
        return "–"
    if key.endswith("hit_rate"):
        return f"{100 * value:.1f} %"
    return f"{value:,.0f}" if float(value).is_integer() else f"{value:,.1f}"


def numbers_html(numbers: Dict[str, Any]) -> str:
    simulated = numbers.get("simulated") is True
    cells = "".join(f"<div style='display:inline-block;min-width:10em;margin:0 1em 0.4em 0'>"
                    f"<b style='font-size:1.2em' data-key='{key}'>{_shown(numbers.get(key), key)}</b><br>{label}</div>"
                    for key, label in NUMBERS)
    banner = f"<p><b>Figures measured on the SIMULATED LLM service</b> ({html.escape(numbers.get('backend') or '')})</p>" \
        if simulated else ""
    state = "done" if numbers.get("done") else "running"
    return f"<div><p>{html.escape(numbers['label'])}: {state}, {_shown(numbers.get('elapsed_s'), '')} s</p>{banner}{cells}</div>"


def _figure(widget: bool):
    layout = make_subplots(rows=2, cols=2, subplot_titles=TITLES)
    figure = go.FigureWidget(layout) if widget else go.Figure(layout)
    for row, col, _, name in SERIES:
        figure.add_scatter(x=[], y=[], mode="lines", name=name, row=row, col=col)
    figure.update_xaxes(title_text="seconds since start")
    figure.update_layout(height=520, margin={"t": 60})
    return figure


class Panel:
    """The widgets of one watched run; ``close()`` (or the end of the ``with`` block) leaves a static figure."""

    def __init__(self, live: LiveMetrics, rag: Any = None, interval_s: float = 1.0):
        import ipywidgets

        self.live, self.rag, self.interval_s = live, rag, interval_s
        self.shown: List[Dict[str, Any]] = []
        self.numbers = ipywidgets.HTML()
        self.figure = _figure(widget=True)
        self.widget = ipywidgets.VBox([self.numbers, self.figure])
        self._stop = threading.Event()
        self._thread: Optional[threading.Thread] = None
        self._lock = threading.Lock()

    def start(self) -> "Panel":
        from IPython.display import display

        self.update()
        display(self.widget)
        self._thread = threading.Thread(target=self._refresh, name="ragopt-panel", daemon=True)
        self._thread.start()
        return self

    def update(self) -> Dict[str, Any]:
        """Show the run's numbers now and add a point to each chart."""
        numbers = self.live.headline()
        with self._lock:
            self.shown.append(numbers)
            self.numbers.value = numbers_html(numbers)
            self._draw(self.figure)
        return numbers

    def _draw(self, figure: Any) -> None:
        points = [n for n in self.shown if n.get("elapsed_s") is not None]
        x = [n["elapsed_s"] for n in points]
        with figure.batch_update():
            for trace, (_, _, key, _) in zip(figure.data, SERIES):
                trace.x, trace.y = x, [n.get(key) for n in points]
            slots = self.shown[-1].get("llm_slots")
            if slots is not None:
                figure.layout.shapes = [dict(type="line", xref="x2 domain", yref="y2", x0=0, x1=1, y0=slots, y1=slots,
                                             line={"dash": "dash"})]
            title = "Live run"
            figure.layout.title = f"{title} ({SIMULATED_NOTE})" if self.shown[-1].get("simulated") else title

    def _refresh(self) -> None:
        while not self._stop.wait(self.interval_s):
            self.update()

    def close(self) -> go.Figure:
        """Stop refreshing, show the final numbers, and leave the static figure in the output (returned)."""
        from IPython.display import display

        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self.live.finish()
        if self.rag is not None:
            self.live.detach(self.rag)
        self.update()
        static = _figure(widget=False)
        self._draw(static)
        self.figure.close()
        display(static)
        return static

    def __enter__(self) -> "Panel":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def watch(rag: Any, *, label: str = "watch", slots: Optional[int] = None, simulator: Any = None, budget: Any = None,
          interval_s: float = 1.0) -> Panel:
    """Show a live panel of ``rag``'s runs in this notebook until the panel is closed (use it with ``with``).

    ``slots`` is K (default: what ``ragopt.optimize`` chose, else the
    config's); ``simulator`` (an ``LLMSimulator``) adds requests queued for a
    slot; ``budget`` (a ``MemoryBudget``) the memory gate.
    """
    from ragopt.config import RagoptConfig
    from ragopt.ui.monitoring import llm_slots

    live = LiveMetrics(label, slots=slots or llm_slots(rag, RagoptConfig.from_env()), simulator=simulator,
                       stats=getattr(rag, "ragopt_stats", None), budget=budget, sample_interval_s=interval_s)
    live.attach(rag).start()
    return Panel(live, rag, interval_s).start()
