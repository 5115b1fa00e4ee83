"""A batch: every render config that `batch` names (deforum_steps/batch.py) is a Snakemake module of this same
Snakefile with its own config, so each render has its own rules (named `<render>__<rule>`: `lake__frame`), its
own per-frame jobs and params, output folder, lock and records, exactly as when it is rendered alone. The
`module` and `use rule` statements take literal names, so they are made here through the same calls the parser
makes of them, once per file. The renders' jobs run in this one process: renders of one model share it.

With `render_jobs: cluster` (profiles/slurm) each render's model jobs become one job, `<render>__render`, for the
executor (SLURM): it runs this workflow on that render alone, its per-frame jobs threads of one process (the model
loads once, every frame stays its own cached job), while the CPU-only stages run here (localrules)."""

from deforum_steps import batch
from deforum_steps.config import record_seed

try:
    BATCH_FILES = batch.render_files(config[batch.KEY])
    BATCH_RENDERS = batch.module_names(BATCH_FILES)
    RENDER_JOBS = batch.render_jobs(config)
    batch.set_renders_in_batch(len(BATCH_FILES))
    BATCH_CONFIGS = {}
    TARGET_RENDERS = batch.target_renders(sys.argv)  # None, but on a node: the render of its job
    for name, path in zip(BATCH_RENDERS, BATCH_FILES):
        if TARGET_RENDERS is not None and name not in TARGET_RENDERS:
            continue
        try:
            BATCH_CONFIGS[name] = batch.render_config(path, workflow.config_settings.config)
            workflow.module(name=name, snakefile=workflow.main_snakefile, config=BATCH_CONFIGS[name])
            workflow.userule(
                rules=["*"],
                from_module=name,
                exclude_rules=["all", *(batch.MODEL_RULES if RENDER_JOBS == "cluster" else ())],
                name_modifier=f"{name}{batch.RULE_SEPARATOR}*",
            )(None)
        except ConfigError as e:
            raise ConfigError(f"{path}: {e}") from None
        except SystemExit as e:  # the render's own config check: one line, named after its file
            raise ConfigError(f"{path}: {str(e.code).removeprefix('config error: ')}") from None
except ConfigError as e:
    sys.exit(f"config error: {e}")
# Each module's names (OUT, TARGETS, its onstart) live in its namespace, workflow.globals[name].
BATCH_MODULES = {name: workflow.globals[name] for name in BATCH_CONFIGS}


if RENDER_JOBS == "cluster":
    # The renders' locks belong to their cluster jobs (each waits for the lock, then holds it while it renders):
    # this run, and the job's own Snakemake process on the node, let go of those they took as the renders loaded.
    for render in BATCH_MODULES.values():
        if render._run_lock:
            render._run_lock.close()


onstart:
    for render in BATCH_MODULES.values():
        if RENDER_JOBS == "local":
            render.onstart()
        elif render.RANDOM_SEED:  # the seed drawn here is the one the job renders with (params.render)
            record_seed(render.config, render.config["seed"])


# The input of the rule named all (in the Snakefile): every render's targets.
TARGETS = [target for render in BATCH_MODULES.values() for target in render.TARGETS]

if RENDER_JOBS == "cluster":

    localrules:
        all,

    workflow.localrules(*(name for name in workflow._rules if name.startswith(tuple(BATCH_MODULES))))
    for name, render in BATCH_MODULES.items():
        # What the render's model jobs make (frames, depth maps, stills): the targets no local rule makes.
        local_rules = [r for r in workflow.rules if r.name.startswith(f"{name}{batch.RULE_SEPARATOR}")]
        made_here = [t for t in render.TARGETS if not any(r.is_producer(t) for r in local_rules)]
        # before the job: the extracted frames it reads, and the schedules, so that no local job writes in the
        # render's folder while the job renders there
        upstream = [
            f for r in local_rules if r.name.endswith((*batch.UPSTREAM_RULES, "schedules")) for f in r.output
        ]

        rule:
            name:
                f"{name}{batch.RULE_SEPARATOR}render"
            input:
                upstream,
            # update: Snakemake keeps the files a job will make again (it deletes plain outputs before a job
            # runs); the render itself redoes only the frames whose own params or inputs changed.
            output:
                [update(t) for t in made_here],
            threads: config.get("render_cpus", batch.cores_per_render(workflow.cores))
            resources:
                **({"gpu": config["render_gpus"]} if config.get("render_gpus") else {}),
                mem_mb=config.get("render_mem_mb", 8000),
                runtime=config.get("render_minutes", 60),
            params:
                # the render's whole config: any edit submits the job, which then reruns only what it changes
                render={**BATCH_CONFIGS[name], "seed": render.config["seed"]},
                out=render.OUT,
                omit=[
                    r.name.split(batch.RULE_SEPARATOR, 1)[1]
                    for r in local_rules
                    if r.name.endswith(batch.DOWNSTREAM_RULES)
                ],
            run:
                batch.render_on_node(workflow.main_snakefile, params.render, params.out, threads, params.omit)
