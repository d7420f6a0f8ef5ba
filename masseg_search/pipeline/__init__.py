"""`masseg-search run`: the stages chained from one config, resumable, every choice recorded in pipeline.yaml; and
`masseg-search demo`: `run` on the bundled synthetic config plus its closing tables.

``stages`` (one function per stage and the list :data:`STAGES`), ``runner`` (skip, continue, rerun, the record),
``record`` (pipeline.yaml), ``plan`` (what to infer for which view), ``demo`` (the demo's table stage)."""
from masseg_search.pipeline.demo import DEMO_STAGES, run_demo
from masseg_search.pipeline.runner import RunResult, resolve_run_config, run_pipeline
from masseg_search.pipeline.stages import STAGES, Stage, StageContext, StageResult, insert_stage, stage_names

__all__ = [
    "DEMO_STAGES", "STAGES", "RunResult", "Stage", "StageContext", "StageResult", "insert_stage", "resolve_run_config",
    "run_demo", "run_pipeline", "stage_names",
]
