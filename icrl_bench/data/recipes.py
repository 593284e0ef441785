"""Dataset recipes (`datasets/<family>.yaml`) and their resolution into one build plan.

A recipe holds the paper's full size; named presets override parts of it. Resolving a
recipe with a preset, a source and a seed gives a `BuildPlan` whose `dataset_id` encodes
every choice that changes the data, so two different datasets never share an id:

    <family>[-<task>][-<preset>][-<source>][-seed<N>]-v<version>

The source appears only when it is not the recipe's own, the seed only when it is not the
recipe's seed: the paper-size Darkroom dataset is `darkroom-v3`, its small preset
`darkroom-small-v3`, and the same made by SB3 instead of the default batched PPO
`darkroom-small-sb3-ppo-v3`.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from icrl_bench import paths
from icrl_bench.envs import get_family
from icrl_bench.errors import IcrlBenchError, unknown
from icrl_bench.sources import SOURCES, get_source, make_config

RECIPE_DIR = paths.RECIPE_DIR  # a module attribute, so tests can point it elsewhere
ID_PATTERN = paths.DATASET_ID_PATTERN
check_dataset_id = paths.check_dataset_id  # in paths: reading a dataset needs no recipe (nor torch)


class TaskStride(BaseModel):
    model_config = ConfigDict(extra="forbid")
    every: int = Field(gt=0, description="keep canonical tasks 0, every, 2*every, ...")


class TaskFirst(BaseModel):
    model_config = ConfigDict(extra="forbid")
    first: int = Field(gt=0, description="keep the first `first` tasks")


TaskSubset = Literal["all"] | TaskStride | TaskFirst


class SplitSelection(BaseModel):
    """Tasks chosen per split, each split's tasks taken in canonical order.

    Meta-World ML1 as the official collector: `{train: all, test: {first: 10}}`.
    """

    model_config = ConfigDict(extra="forbid")
    train: TaskSubset = "all"
    test: TaskSubset = "all"


TaskSelection = Literal["all"] | list[int] | TaskStride | SplitSelection


class Preset(BaseModel):
    model_config = ConfigDict(extra="forbid")
    description: str = ""
    tasks: TaskSelection | None = None
    source: dict[str, Any] = {}


class Recipe(BaseModel):
    """One dataset family as written in its YAML file."""

    model_config = ConfigDict(extra="forbid")
    family: str
    env: str  # an env family name; with `{task}` in it, `--task` picks one (metaworld-ml1-{task})
    version: int = Field(ge=1)
    description: str
    seed: int = 0
    tasks: TaskSelection = "all"
    source: dict[str, Any]  # the default source's name and settings
    other_sources: dict[str, dict[str, Any]] = {}  # settings of sources chosen with --source
    presets: dict[str, Preset] = {}

    @property
    def task_names(self) -> tuple[str, ...]:
        """The names `--task` accepts ((): the recipe has no task choice)."""
        if "{task}" not in self.env:
            return ()
        from icrl_bench.envs.metaworld import ML1_PREFIX, ML1_TASKS

        if self.env != ML1_PREFIX + "{task}":
            raise IcrlBenchError(f"recipe {self.family}: no task list for env template {self.env!r}.")
        return ML1_TASKS


@dataclass(frozen=True)
class BuildPlan:
    """Everything that determines a dataset's content, resolved and checked."""

    dataset_id: str
    family: str
    env: str
    version: int
    preset: str | None
    source: str
    seed: int
    tasks: list[int]
    source_settings: dict[str, Any] = field(default_factory=dict)
    description: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def task_seed(self, task: int) -> int:
        """The learner's seed on canonical task `task` (the official alg_seed + env_idx)."""
        return self.seed + task


def recipe_path(family: str) -> Path:
    return RECIPE_DIR / f"{family}.yaml"




def known_families() -> list[str]:
    return sorted(p.stem for p in RECIPE_DIR.glob("*.yaml") if p.name != paths.CATALOG_FILE)  # the catalog is not a recipe


def load_recipe(family: str) -> Recipe:
    """Read and validate `datasets/<family>.yaml`."""
    path = recipe_path(family)
    if not path.is_file():
        raise unknown("dataset recipe", family, known_families())
    try:
        return Recipe.model_validate(yaml.safe_load(path.read_text()))
    except (yaml.YAMLError, ValidationError) as err:
        first = str(err).splitlines()
        raise IcrlBenchError(f"recipe {path} is invalid: {' '.join(first[:3])}") from None


def format_dataset_id(family: str, version: int, preset: str | None = None, source: str | None = None, seed: int | None = None) -> str:
    parts = [family, preset, source, None if seed is None else f"seed{seed}"]
    return "-".join(p for p in parts if p) + f"-v{version}"


def resolve(family: str, preset: str | None = None, source: str | None = None, seed: int | None = None, task: str | None = None) -> BuildPlan:
    """The build plan of `family` with a preset, source, seed and task (None: the recipe's)."""
    recipe = load_recipe(family)
    env_name, name = _env_and_name(recipe, task)
    if preset is not None and preset not in recipe.presets:
        raise unknown(f"preset of {family}", preset, recipe.presets)
    chosen = recipe.presets[preset] if preset else Preset()
    source_name = source or recipe.source.get("name")
    if source_name not in SOURCES:
        raise unknown("source", str(source_name), SOURCES)
    base = recipe.other_sources.get(source_name, recipe.source)
    settings = {k: v for k, v in base.items() if k != "name"} | chosen.source
    where = f"{family}{'/' + preset if preset else ''} source settings"
    config = make_config(get_source(source_name).config_cls, settings, where)
    env = get_family(env_name)
    tasks = _select_tasks(chosen.tasks if chosen.tasks is not None else recipe.tasks, env, family)
    seed = recipe.seed if seed is None else seed
    dataset_id = format_dataset_id(
        name,
        recipe.version,
        preset,
        None if source_name == recipe.source.get("name") else source_name,
        None if seed == recipe.seed else seed,
    )
    return BuildPlan(
        dataset_id=dataset_id,
        family=family,
        env=env_name,
        version=recipe.version,
        preset=preset,
        source=source_name,
        seed=seed,
        tasks=tasks,
        source_settings=asdict(config),
        description=(chosen.description or recipe.description).strip(),
    )


def _env_and_name(recipe: Recipe, task: str | None) -> tuple[str, str]:
    """The env a build runs and the name its dataset ids start with, checking `--task`."""
    names = recipe.task_names
    if not names:
        if task is not None:
            raise IcrlBenchError(f"{recipe.family} has no task choice; drop --task {task}.")
        return recipe.env, recipe.family
    if task is None:
        raise IcrlBenchError(f"{recipe.family} needs --task; one of: {', '.join(names)}.")
    task = task.removesuffix("-v3").removesuffix("-v2")
    if task not in names:
        raise unknown(f"task of {recipe.family}", task, names)
    return recipe.env.format(task=task), f"{recipe.family}-{task}"


def plan_task(plan: BuildPlan) -> str | None:
    """The `--task` of a plan (None for recipes without a task choice)."""
    prefix = load_recipe(plan.family).env.split("{task}")[0]
    return plan.env[len(prefix) :] if "{task}" in load_recipe(plan.family).env else None


def build_command(plan: BuildPlan) -> str:
    """The CLI command that builds `plan`'s dataset."""
    recipe = load_recipe(plan.family)
    command = f"icrl-bench build-dataset {plan.family}"
    task = plan_task(plan)
    command += f" --task {task}" if task else ""
    command += f" --preset {plan.preset}" if plan.preset else ""
    command += f" --source {plan.source}" if plan.source != recipe.source.get("name") else ""
    command += f" --seed {plan.seed}" if plan.seed != recipe.seed else ""
    return command


def _select_tasks(selection: TaskSelection, env: Any, family: str) -> list[int]:
    n_tasks = env.n_tasks
    if isinstance(selection, SplitSelection):
        split = env.split()
        return sorted(_subset(sorted(split.train), selection.train) + _subset(sorted(split.test), selection.test))
    if selection == "all" or isinstance(selection, (TaskStride, TaskFirst)):
        return _subset(list(range(n_tasks)), selection)
    bad = [t for t in selection if not 0 <= t < n_tasks]
    if bad or len(set(selection)) != len(selection):
        raise IcrlBenchError(f"recipe {family}: tasks must be distinct indices in [0, {n_tasks}), got {bad or 'duplicates'}.")
    return sorted(selection)


def _subset(tasks: list[int], subset: TaskSubset) -> list[int]:
    if isinstance(subset, TaskStride):
        return [int(t) for t in tasks[:: subset.every]]
    if isinstance(subset, TaskFirst):
        return [int(t) for t in tasks[: subset.first]]
    return [int(t) for t in tasks]


def parse_dataset_id(dataset_id: str) -> BuildPlan | None:
    """The build plan a dataset id names, or None if no recipe makes that id."""
    match = ID_PATTERN.match(dataset_id)
    if not match:
        return None
    name, version = match["name"], int(match["version"])
    for family in sorted(known_families(), key=len, reverse=True):
        if name != family and not name.startswith(family + "-"):
            continue
        recipe = load_recipe(family)
        rest = name[len(family) + 1 :]
        task = _take(rest, recipe.task_names)
        if recipe.task_names and not task:
            continue
        rest = rest[len(task) + 1 :] if task else rest
        preset = _take(rest, recipe.presets)
        rest = rest[len(preset) + 1 :] if preset else rest
        source = _take(rest, SOURCES)
        rest = rest[len(source) + 1 :] if source else rest
        seed_match = re.fullmatch(r"seed([0-9]+)", rest)
        if rest and not seed_match:
            continue
        try:
            plan = resolve(family, preset, source, int(seed_match[1]) if seed_match else None, task)
        except IcrlBenchError:
            continue
        if plan.dataset_id == dataset_id and plan.version == version:
            return plan
    return None


def _take(rest: str, names) -> str | None:
    """The longest of `names` that `rest` starts with as a whole hyphen-separated part."""
    for name in sorted(names, key=len, reverse=True):
        if rest == name or rest.startswith(name + "-"):
            return name
    return None
