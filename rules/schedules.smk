"""Evaluate every schedule per frame; record the table (CSV + plot) and the resolved settings."""
from deforum_steps import report


rule schedules:
    output:
        **schedule_outputs(),
    params:
        # the whole resolved config: any edit rewrites the records, an unchanged config reruns nothing
        cfg=config,
    run:
        report.write_schedule_records(params.cfg, output.csv, output.png, output.get("settings"))
