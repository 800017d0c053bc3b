"""Plotly figures of Runs. Every figure made on the simulated LLM says so in its title."""

from __future__ import annotations

from typing import Iterable, List

import pandas as pd
import plotly.graph_objects as go

SIMULATED_NOTE = "simulated LLM service"


def _title(text: str, runs: Iterable) -> str:
    return f"{text} ({SIMULATED_NOTE})" if any(run.simulated for run in runs) else text


def stage_breakdown(runs: List) -> go.Figure:
    """Busy seconds per stage for each run, next to its wall time."""
    fig = go.Figure()
    for run in runs:
        stages = run.stage_seconds()
        fig.add_bar(name=run.label, x=stages["stage"], y=stages["busy_s"])
    for run in runs:
        fig.add_hline(y=run.meta.get("wall_s") or 0, line_dash="dot", annotation_text=f"wall {run.label}")
    fig.update_layout(title=_title("Where the time goes: busy seconds per stage", runs), barmode="group", yaxis_title="seconds")
    return fig


def slot_occupancy(runs: List) -> go.Figure:
    """LLM requests holding a slot over time, against the service's K slots."""
    fig = go.Figure()
    for run in runs:
        steps = run.llm_slots_in_use()
        fig.add_scatter(x=steps["t_s"], y=steps["in_flight"], mode="lines", line_shape="hv", name=run.label)
    slots = max((run.meta.get("slots") or 0) for run in runs) if runs else 0
    fig.add_hline(y=slots, line_dash="dash", annotation_text=f"K = {slots} slots")
    fig.update_layout(title=_title("LLM slots in use over time", runs), xaxis_title="seconds since start", yaxis_title="requests in a slot")
    return fig


def slot_occupancy_facets(runs: List) -> go.Figure:
    """LLM slots in use over time, one panel per run side by side, each against its K."""
    from plotly.subplots import make_subplots

    fig = make_subplots(rows=1, cols=len(runs), shared_yaxes=True, subplot_titles=[run.label for run in runs])
    for col, run in enumerate(runs, start=1):
        for trace in slot_occupancy([run]).data:
            fig.add_trace(trace.update(showlegend=False), row=1, col=col)
        fig.add_hline(y=run.meta["slots"], line_dash="dash", annotation_text=f"K = {run.meta['slots']}", row=1, col=col)
        fig.update_xaxes(title_text="seconds since start", row=1, col=col)
    fig.update_layout(title=_title("LLM slots in use over time", runs), yaxis_title="requests in a slot")
    return fig


def staircase(stairs: pd.DataFrame) -> go.Figure:
    """docs/min and wall / limit after each step of ``ragopt.measure.steps.staircase``."""
    from plotly.subplots import make_subplots

    fig = make_subplots(rows=1, cols=2, subplot_titles=("docs/min", "wall / LLM-bound limit"))
    fig.add_bar(x=stairs["label"], y=stairs["docs_per_min"], showlegend=False, row=1, col=1)
    fig.add_bar(x=stairs["label"], y=stairs["wall_over_limit"], showlegend=False, row=1, col=2)
    simulated = bool(stairs["simulated_llm"].all()) if len(stairs) else False
    title = "One optimization more at each step"
    fig.update_layout(title=f"{title} ({SIMULATED_NOTE})" if simulated else title)
    return fig


def rss_timeline(runs: List) -> go.Figure:
    """Resident memory of the process and its children (parse pool, embedding worker) over time."""
    fig = go.Figure()
    for run in runs:
        resources = run.resources
        if resources.empty:
            continue
        fig.add_scatter(x=resources["t_s"], y=resources["total_rss_mb"], mode="lines", name=run.label)
    fig.update_layout(title=_title("RSS over time", runs), xaxis_title="seconds since start", yaxis_title="MB")
    return fig


def cpu_timeline(runs: List) -> go.Figure:
    """CPU use of the process tree, 100% = all cores busy."""
    fig = go.Figure()
    for run in runs:
        if not run.resources.empty:
            fig.add_scatter(x=run.resources["t_s"], y=run.resources["cpu_pct"], mode="lines", name=run.label)
    fig.update_layout(title=_title("CPU % of all cores", runs), xaxis_title="seconds since start", yaxis_title="%")
    return fig


def variant_bars(spread: pd.DataFrame, metric: str, label: str, simulated: bool) -> go.Figure:
    """Mean of ``metric`` per variant with ± one standard deviation (``ragopt.measure.ablation.spread``)."""
    mean, std, n = spread["mean"][metric], spread["std"][metric].fillna(0), spread["n"][metric]
    fig = go.Figure(go.Bar(x=list(mean.index), y=list(mean), error_y={"type": "data", "array": list(std), "visible": True}))
    title = f"{label} per variant, mean ± std over {int(n.max()) if len(n) else 0} repeat(s)"
    fig.update_layout(title=f"{title} ({SIMULATED_NOTE})" if simulated else title, yaxis_title=label)
    return fig


def budget_timeline(rss: pd.DataFrame, budget, files: pd.DataFrame, simulated: bool) -> go.Figure:
    """RSS of the process tree against a MemoryBudget (holds shaded), and documents done over time."""
    from plotly.subplots import make_subplots

    fig = make_subplots(rows=2, cols=1, shared_xaxes=True, row_heights=[0.6, 0.4], vertical_spacing=0.06,
                        subplot_titles=("RSS of the process tree", "documents done"))
    fig.add_scatter(x=rss["t_s"], y=rss["total_rss_mb"], mode="lines", name="RSS (MB)", row=1, col=1)
    fig.add_hline(y=budget.max_mb, line_dash="dash", annotation_text="budget (max_mb)", row=1, col=1)
    fig.add_hline(y=budget.low_water_mb, line_dash="dot", annotation_text="reopens below (low water)", row=1, col=1)
    done = sorted(files["done_s"].dropna())
    fig.add_scatter(x=done, y=list(range(1, len(done) + 1)), mode="lines", line_shape="hv", name="documents done", row=2, col=1)
    # The budget's clock starts when it is made, the ingestion's when it starts: both within the timeline.
    for event in budget.events:
        fig.add_vrect(x0=event.started_s, x1=event.started_s + event.held_s, fillcolor="red", opacity=0.12, line_width=0)
    fig.update_yaxes(title_text="MB", row=1, col=1)
    fig.update_yaxes(title_text="documents", row=2, col=1)
    fig.update_xaxes(title_text="seconds", row=2, col=1)
    title = "MemoryBudget: no document is inserted while RSS is over budget (shaded: held)"
    fig.update_layout(title=f"{title} ({SIMULATED_NOTE})" if simulated else title, height=600)
    return fig


def cycle_growth(cycles: pd.DataFrame) -> go.Figure:
    """RSS and live Python objects added per build/ingest/drop cycle, one line per series."""
    import plotly.colors
    from plotly.subplots import make_subplots

    fig = make_subplots(rows=1, cols=2, subplot_titles=("RSS added by the series' cycles (MB)", "live Python objects added"))
    for index, (name, frame) in enumerate(cycles.groupby("series", sort=False)):
        color = plotly.colors.qualitative.Plotly[index]
        x = [0] + list(frame["cycle"])
        fig.add_scatter(x=x, y=[0] + list(frame["rss_growth_mb"]), mode="lines+markers", name=name, legendgroup=name, line_color=color, row=1, col=1)
        fig.add_scatter(x=x, y=[0] + list(frame["objects_growth"]), mode="lines+markers", name=name, legendgroup=name,
                        showlegend=False, line_color=color, row=1, col=2)
    fig.update_xaxes(title_text="cycle")
    title = "Memory growth per build/ingest/drop cycle"
    fig.update_layout(title=f"{title} ({SIMULATED_NOTE})" if cycles.attrs.get("simulated") else title)
    return fig


def summary_table(frame: pd.DataFrame, title: str = "") -> go.Figure:
    """A DataFrame (e.g. ``experiments.compare_runs``) as a plotly table."""
    shown = frame.reset_index().astype(object).where(frame.reset_index().notna(), "n/a (not measured)")
    cells = [[_fmt(v) for v in shown[c]] for c in shown.columns]
    fig = go.Figure(go.Table(header={"values": [str(c) for c in shown.columns]}, cells={"values": cells, "align": "left"}))
    fig.update_layout(title=title)
    return fig


def _fmt(value) -> str:
    if isinstance(value, float):
        return f"{value:,.3g}" if abs(value) < 1000 else f"{value:,.0f}"
    return str(value)
