"""A what-if panel over a plan: LLM slots, latency preset, price and parse workers; the prediction updates in place.

``plan_panel(plan)`` shows ipywidgets controls and an HTML readout of the
predicted wall time (ragopt and RAG-Anything as shipped, with intervals and
the bounding stage) and cost. Each change calls ``Plan.predict`` with the new
settings (no ingestion runs: the model was fitted once, on the sample), so
the readout follows the sliders at once. ``panel.set(slots=16)`` takes the
same path as moving a control, for tests and scripts.
"""

from __future__ import annotations

import html
from typing import Any, Dict

from ragopt.measure.ledger import ModelPrice, Prices

FITTED = "fitted on the sample"


class PlanPanel:
    """The controls, the readout, and the last prediction (``panel.prediction``)."""

    def __init__(self, plan: Any):
        import ipywidgets as widgets

        from ragopt.backends.llm_sim import PRESETS

        self.plan = plan
        base = plan.prediction
        llm = plan.model.models.get("llm", "unknown")
        price = base.prices.models.get(llm)
        self.controls: Dict[str, Any] = {
            "slots": widgets.IntSlider(value=base.slots, min=1, max=max(64, 4 * base.slots), description="LLM slots K"),
            "preset": widgets.Dropdown(options=[FITTED] + sorted(PRESETS), value=FITTED, description="latency"),
            "input_price": widgets.FloatText(value=price.input if price else 0.0, description="in $/M tok"),
            "output_price": widgets.FloatText(value=price.output if price else 0.0, description="out $/M tok"),
            "parse_workers": widgets.IntSlider(value=base.parse_workers, min=1, max=max(16, 2 * base.parse_workers),
                                               description="parse workers"),
        }
        self.priced = price is not None
        self.readout = widgets.HTML()
        for control in self.controls.values():
            control.observe(lambda change: self.update(), names="value")
        self.widget = widgets.VBox([widgets.HBox(list(self.controls.values())[:3]), widgets.HBox(list(self.controls.values())[3:]),
                                    self.readout])
        self.prediction = None
        self.update()

    def set(self, **values: Any) -> None:
        """Set controls by name (``slots``, ``preset``, ``input_price``, ``output_price``, ``parse_workers``)."""
        for name, value in values.items():
            self.controls[name].value = value

    def _prices(self) -> Prices:
        base = self.plan.prediction.prices
        if not self.priced and not (self.controls["input_price"].value or self.controls["output_price"].value):
            return base  # no price was given and none typed in: "no price", not zero
        llm = self.plan.model.models.get("llm", "unknown")
        models = {**base.models, llm: ModelPrice(self.controls["input_price"].value, self.controls["output_price"].value)}
        return Prices(models, base.embeddings, base.currency, (base.source or "") + " + the panel's LLM price")

    def update(self) -> None:
        preset = self.controls["preset"].value
        self.prediction = self.plan.predict(slots=self.controls["slots"].value, latency=None if preset == FITTED else preset,
                                            parse_workers=self.controls["parse_workers"].value, prices=self._prices())
        self.readout.value = readout_html(self.prediction)

    def _ipython_display_(self) -> None:
        from IPython.display import display

        display(self.widget)


def readout_html(prediction: Any) -> str:
    """The predicted wall times and cost as HTML, saying they are predictions (and simulated, where they are)."""
    cost = prediction.cost.get("total")
    rows = "".join(
        f"<tr><td>{html.escape(m.label)}</td><td>{m.wall.value:,.1f} s</td><td>{_interval(m.wall)}</td>"
        f"<td>{html.escape(m.bound)}</td></tr>" for m in prediction.modes.values())
    note = "PREDICTION (95% intervals from the sample's variance)" + (", fitted on the SIMULATED LLM service" if prediction.simulated else "")
    money = "no price" if cost is None else f"{cost.value:,.4g} {prediction.prices.currency} {_interval(cost)}"
    return (f"<b>{note}</b><br>{prediction.documents} documents, {prediction.chunks} chunks; K = {prediction.slots}, "
            f"{prediction.parse_workers} parse workers, latency {html.escape(prediction.latency.source)}"
            f"<table><tr><th>mode</th><th>wall</th><th>95%</th><th>bound by</th></tr>{rows}</table>"
            f"LLM-bound limit {prediction.modes['ragopt'].limit_s:,.1f} s; cost {money}")


def _interval(estimate: Any) -> str:
    return f"[{estimate.lo:,.4g}, {estimate.hi:,.4g}]" if estimate.has_interval else "(no interval)"


def plan_panel(plan: Any) -> PlanPanel:
    """The what-if panel of ``plan`` (a ``ragopt.measure.planner.Plan``)."""
    return PlanPanel(plan)
