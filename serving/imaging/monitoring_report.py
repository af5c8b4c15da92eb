"""`clinassist monitor report --since DATE`: the monitored figures over time, as a short Markdown
report with PNG plots, and a plain verdict on drift and agreement.

Per day (UTC): the score distribution, the flag rate, QC rejections by reason, the drift
statistic of each feature against the validation reference, readings received and the flags'
sensitivity and specificity against them. Over the whole period: drift is flagged when any
feature's PSI passes `PSI_ALERT`; agreement is flagged as falling when sensitivity or
specificity is more than `AGREEMENT_DROP_ALERT` under validation, on enough readings.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path

import numpy as np

from clinassist.serving.imaging.feedback import Feedback, FeedbackStore
from clinassist.serving.imaging.monitoring import (AGREEMENT_DROP_ALERT, MIN_AGREEMENT_CASES,
                                                   MIN_DRIFT_SAMPLES, POOLED, PSI_ALERT,
                                                   Agreement, MonitoringStore, Reference,
                                                   TriageEvent, drift)

REPORT_FILE = "monitoring_report.md"


@dataclass
class MonitoringReport:
    """The verdict lines (alerts first) and the files written."""

    alerts: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    psi: dict[tuple[str, str], float] = field(default_factory=dict)
    agreement: Agreement | None = None
    files: list[Path] = field(default_factory=list)

    @property
    def lines(self) -> list[str]:
        return [*self.alerts, *self.notes]


def by_day(items, day_of) -> dict[str, list]:
    days: dict[str, list] = defaultdict(list)
    for item in items:
        days[day_of(item)].append(item)
    return dict(sorted(days.items()))


def verdict(events: list[TriageEvent], readings: list[Feedback],
            reference: Reference | None) -> MonitoringReport:
    report = MonitoringReport()
    if reference is None:
        report.notes.append("No validation reference: drift cannot be measured; run "
                            "`clinassist monitor reference`.")
    else:
        report.psi = drift(events, reference)
        over = {key: value for key, value in report.psi.items() if value > PSI_ALERT}
        if over:
            worst = ", ".join(f"{feature} {value:.2f} ({population})" for (population, feature),
                              value in sorted(over.items(), key=lambda kv: -kv[1]))
            report.alerts.append(f"DRIFT: the inputs or scores have moved away from the "
                                 f"validation reference: PSI {worst}, above {PSI_ALERT}.")
        elif report.psi:
            (population, feature), value = max(report.psi.items(), key=lambda kv: kv[1])
            report.notes.append(f"No drift: every PSI is at most {PSI_ALERT} (highest "
                                f"{value:.2f}, {feature}, {population}).")
        else:
            report.notes.append(f"Too few triages to measure drift ({len(events)}; "
                                f"{MIN_DRIFT_SAMPLES} needed).")
    agreement = report.agreement = Agreement.of(readings)
    validation = reference.for_population(POOLED) if reference is not None else None
    falling = agreement.falling(validation) if validation is not None else []
    if falling:
        report.alerts.append("AGREEMENT FALLING: " + "; ".join(falling) + f" (more than "
                             f"{AGREEMENT_DROP_ALERT:.2f} under validation).")
    elif min(agreement.positives, agreement.negatives) < MIN_AGREEMENT_CASES:
        report.notes.append(f"Too few readings to judge agreement: {agreement.positives} "
                            f"pneumonia, {agreement.negatives} no pneumonia "
                            f"({MIN_AGREEMENT_CASES} of each needed).")
    else:
        report.notes.append(f"Agreement holds: sensitivity {agreement.sensitivity:.2f} on "
                            f"{agreement.positives} readings, specificity "
                            f"{agreement.specificity:.2f} on {agreement.negatives}.")
    return report


def write_report(home: Path, since: date, output: Path,
                 reference: Reference | None) -> MonitoringReport:
    """Write `output/monitoring_report.md` and its plots; see the module docstring."""
    events = MonitoringStore(home).events(since=since.isoformat())
    readings = FeedbackStore(home).current(since=since.isoformat())
    report = verdict(events, readings, reference)
    output.mkdir(parents=True, exist_ok=True)
    days = by_day(events, lambda e: e.recorded_at[:10])
    reading_days = by_day(readings, lambda f: f.received_at[:10])
    report.files = _plots(days, reading_days, reference, output)
    (output / REPORT_FILE).write_text(_markdown(report, since, events, readings, days,
                                                reference))
    report.files.insert(0, output / REPORT_FILE)
    return report


def _plots(days: dict[str, list[TriageEvent]], reading_days: dict[str, list[Feedback]],
           reference: Reference | None, output: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    files = []

    def save(figure, name: str) -> None:
        figure.tight_layout()
        figure.savefig(output / name, dpi=100, metadata={"Software": None})
        plt.close(figure)
        files.append(output / name)

    labels = list(days)
    figure, axes = plt.subplots(2, 1, figsize=(8, 6), sharex=True)
    scores = [[e.probability for e in group if e.probability is not None] or [np.nan]
              for group in days.values()]
    axes[0].boxplot(scores, tick_labels=labels or None)
    axes[0].set(title="Score distribution per day", ylabel="probability", ylim=(0, 1))
    rates = [np.mean([e.flag == "urgent" for e in g if e.flag]) if any(e.flag for e in g)
             else np.nan for g in days.values()]
    axes[1].plot(range(1, len(labels) + 1), rates, marker="o", label="flag rate")
    if reference is not None:
        axes[1].axhline(reference.for_population(POOLED).flag_rate, linestyle="--",
                        color="grey", label="validation")
    axes[1].set(title="Share flagged urgent", ylim=(0, 1))
    axes[1].legend()
    save(figure, "scores_and_flags.png")

    figure, axis = plt.subplots(figsize=(8, 3.5))
    reasons = sorted({r for g in days.values() for e in g for r in e.blocking_reasons})
    bottom = np.zeros(len(labels))
    for reason in reasons:
        counts = np.array([sum(reason in e.blocking_reasons for e in g) for g in days.values()])
        axis.bar(labels, counts, bottom=bottom, label=reason)
        bottom += counts
    axis.set(title="QC rejections per day, by reason", ylabel="images")
    if reasons:
        axis.legend(fontsize="small")
    save(figure, "qc_rejections.png")

    if reference is not None:
        figure, axis = plt.subplots(figsize=(8, 3.5))
        daily = [drift(group, reference) for group in days.values()]
        for key in sorted({k for d in daily for k in d}):
            axis.plot(labels, [d.get(key, np.nan) for d in daily], marker="o",
                      label=f"{key[1]} ({key[0]})")
        axis.axhline(PSI_ALERT, color="red", linestyle="--", label=f"alert {PSI_ALERT}")
        axis.set(title=f"Drift per day (PSI against validation; days with at least "
                       f"{MIN_DRIFT_SAMPLES} triages)", ylabel="PSI")
        axis.legend(fontsize="small")
        save(figure, "drift.png")

    figure, axis = plt.subplots(figsize=(8, 3.5))
    reading_labels = list(reading_days)
    running: list[Feedback] = []
    sens, spec = [], []
    for group in reading_days.values():
        running += group
        agreement = Agreement.of(running)
        sens.append(agreement.sensitivity if agreement.sensitivity is not None else np.nan)
        spec.append(agreement.specificity if agreement.specificity is not None else np.nan)
    axis.plot(reading_labels, sens, marker="o", label="sensitivity (to date)")
    axis.plot(reading_labels, spec, marker="s", label="specificity (to date)")
    if reference is not None:
        validation = reference.for_population(POOLED)
        axis.axhline(validation.sensitivity, color="C0", linestyle="--", label="validation")
        axis.axhline(validation.specificity, color="C1", linestyle="--")
    axis.set(title="Agreement of the flags with the radiologists' readings", ylim=(0, 1.05))
    axis.legend(fontsize="small")
    save(figure, "agreement.png")
    return files


def _markdown(report: MonitoringReport, since: date, events: list[TriageEvent],
              readings: list[Feedback], days: dict[str, list[TriageEvent]],
              reference: Reference | None) -> str:
    rejections = Counter(r for e in events for r in e.blocking_reasons)
    rows = "\n".join(
        f"| {day} | {len(g)} | {sum(e.flag is not None for e in g)} | "
        f"{sum(e.flag == 'urgent' for e in g)} | {sum(not e.qc_passed for e in g)} |"
        for day, g in days.items())
    psi_rows = "\n".join(f"| {population} | {feature} | {value:.3f} |"
                         for (population, feature), value in sorted(report.psi.items()))
    model = reference.model if reference else {}
    return f"""# Triage monitoring since {since.isoformat()}

{chr(10).join(f"- **{line}**" if line in report.alerts else f"- {line}" for line in report.lines)}

{len(events)} triages, {len(readings)} studies with a reading. Reference: validation images of
{model.get('name', '-')} {model.get('version', '-')}.

| day | triages | scored | urgent | QC rejected |
|---|---|---|---|---|
{rows or '| - | 0 | 0 | 0 | 0 |'}

QC rejections by reason: {', '.join(f'{r} {n}' for r, n in rejections.most_common()) or 'none'}.

| population | feature | PSI (whole period) |
|---|---|---|
{psi_rows or '| - | - | - |'}

![scores and flags](scores_and_flags.png)
![QC rejections](qc_rejections.png)
{'![drift](drift.png)' if reference is not None else ''}
![agreement](agreement.png)
"""
