"""Every schedule evaluated per frame: the table as schedules.csv and schedules.png, and the resolved settings
(job function: deforum_steps/schedules.py). It runs before any frame (the highest priority among the jobs that
are ready at the start), so the CSV and the plot are there from the first seconds of a render. No frame job
takes them as input: they are rewritten on any edit, and a frame reruns for its own row only."""

from deforum_steps import schedules

# The outputs `snakemake --report` shows: their caption and category.
SCHEDULE_REPORT = {
    "csv": {"caption": f"{workflow.basedir}/report/schedules_csv.rst", "category": "Schedules"},
    "png": {"caption": f"{workflow.basedir}/report/schedules_plot.rst", "category": "Schedules"},
    "settings": {"caption": f"{workflow.basedir}/report/settings_file.rst", "category": "Settings"},
}


rule schedules:
    output:
        **{
            name: report(path, **SCHEDULE_REPORT[name]) if name in SCHEDULE_REPORT else path
            for name, path in schedule_outputs().items()
        },
    priority: 100
    params:
        # the whole resolved config: any edit rewrites the records, an unchanged config reruns nothing
        cfg=config,
    run:
        schedules.write_records(params.cfg, **output)


TARGETS.extend(schedule_outputs().values())
