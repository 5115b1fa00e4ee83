"""Every schedule evaluated per frame: the table as schedules.csv and schedules.png, and the resolved settings
(job function: deforum_steps/schedules.py)."""

from deforum_steps import schedules


rule schedules:
    output:
        **schedule_outputs(),
    params:
        # the whole resolved config: any edit rewrites the records, an unchanged config reruns nothing
        cfg=config,
    run:
        schedules.write_records(params.cfg, **output)


TARGETS.extend(schedule_outputs().values())
