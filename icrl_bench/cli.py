"""The `icrl-bench` command line: thin commands that call one library function and print.

Errors the user can fix (IcrlBenchError) end in one red line and exit code 1, never a
traceback; Ctrl-C on a long job exits 130 after saying how to resume.
"""

from __future__ import annotations

import errno
import json
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from icrl_bench.devices import keep_freed_memory
from icrl_bench.errors import IcrlBenchError
from icrl_bench.fileio import human_bytes
from icrl_bench.paths import check_writable


class _OneLineErrors(typer.core.TyperGroup):
    """Turns user-fixable errors into one red line and an exit code, for every command."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except IcrlBenchError as err:
            build = sys.modules.get("icrl_bench.data.build")  # only a build raises BuildInterrupted: never import it (torch) to ask
            if build is not None and isinstance(err, build.BuildInterrupted):
                err_console.print(f"[yellow]interrupted:[/] {err}", highlight=False, soft_wrap=True)
                raise typer.Exit(130) from None
            err_console.print(f"[red]error:[/] {escape(str(err))}", highlight=False, soft_wrap=True)
            raise typer.Exit(1) from None
        except KeyboardInterrupt:
            err_console.print("[yellow]interrupted[/]")
            raise typer.Exit(130) from None
        except OSError as err:  # a place the user chose that cannot be written (permissions, read-only, full)
            if err.errno not in WRITE_ERRNOS:
                raise
            err_console.print(f"[red]error:[/] {escape(write_error(err))}", highlight=False, soft_wrap=True)
            raise typer.Exit(1) from None


WRITE_ERRNOS = {errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOSPC, errno.EDQUOT}


def write_error(err: OSError) -> str:
    """One line for an OSError of the user's file system: what could not be done, where, and the fix."""
    where = err.filename or "a file"
    if err.errno in (errno.ENOSPC, errno.EDQUOT):
        return f"no space left writing {where} ({err.strerror}); free some space or choose another --out / --root."
    return f"cannot write {where} ({err.strerror}); choose a directory you can write to (--out / --root) or fix its permissions."


app = typer.Typer(
    cls=_OneLineErrors,
    help="Learning-history datasets, in-context RL agents and a benchmark.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
datasets_app = typer.Typer(
    help="Datasets: list (--remote: the catalog), show, info, download, verify, import, export, push, delete.", no_args_is_help=True
)
app.add_typer(datasets_app, name="datasets")


def _print_version(value: bool) -> None:
    if value:
        from icrl_bench import __version__
        from icrl_bench.provenance import code_commit

        commit = code_commit()
        typer.echo(f"icrl-bench {__version__}" + (f" (code {commit[:12]}{'-dirty' if commit.endswith('-dirty') else ''})" if commit else ""))
        raise typer.Exit()


@app.callback()
def _main(
    version: Annotated[bool, typer.Option("--version", callback=_print_version, is_eager=True, help="Print the version and exit.")] = False,
) -> None:
    """Learning-history datasets, in-context RL agents and a benchmark."""
    keep_freed_memory()  # this process and its workers reuse freed memory instead of faulting it in again

console = Console()
err_console = Console(stderr=True)

RootOption = Annotated[
    Path | None, typer.Option("--root", help="Data root (default: $ICRL_BENCH_ROOT or the user cache dir).")
]
ExecutorOption = Annotated[str, typer.Option(help="Where jobs run: local (processes on this machine) or ray (a Ray cluster; docs/scale.md).")]
AddressOption = Annotated[
    str | None, typer.Option(help="With --executor ray: auto (the cluster this machine is in) or HOST:PORT of its head (default: $RAY_ADDRESS, else a Ray here).")
]


@app.command("build-dataset")
def build_dataset_cmd(
    family: Annotated[str, typer.Argument(help="Dataset family: darkroom, darkroom-permuted, dark-key-to-door, metaworld-ml1, metaworld-ml10.")],
    task: Annotated[str | None, typer.Option(help="The task of a family that has several (metaworld-ml1: reach, push, pick-place, ...).")] = None,
    preset: Annotated[str | None, typer.Option(help="A smaller named preset of the recipe (e.g. small).")] = None,
    source: Annotated[str | None, typer.Option(help="Source algorithm (default: the recipe's).")] = None,
    seed: Annotated[int | None, typer.Option(help="Base seed (default: the recipe's; another seed is another dataset id).")] = None,
    workers: Annotated[int | None, typer.Option(help="Jobs at once (default: all cores; with --executor ray, the cluster's CPUs).")] = None,
    device: Annotated[str, typer.Option(help="Torch device for the source's learners.")] = "cpu",
    executor: ExecutorOption = "local",
    address: AddressOption = None,
    root: RootOption = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bars.")] = False,
) -> None:
    """Run the source RL algorithm on every task and record its learning histories."""
    from icrl_bench.data.build import build_dataset, pin_cpu_kernels
    from icrl_bench.data.catalog import published_hash_check

    pin_cpu_kernels()  # before any torch op: the kernels the published bytes were built on
    result = build_dataset(family, preset, source, seed, workers, root, device, show_progress=not quiet, console=err_console, task=task,
                           executor=executor, address=address)
    if result.already_built:
        console.print(f"{result.dataset_id} is already built at {result.path} (hash {result.content_hash[:12]}).")
    else:
        console.print(
            f"[green]built[/] {result.dataset_id} at {result.path} in {result.wall_time_s:.1f} s "
            f"({result.tasks_run} tasks run this time; hash {result.content_hash[:12]})."
        )
    from icrl_bench.data.dataset import load_dataset

    manifest = load_dataset(result.dataset_id, root).manifest
    check = published_hash_check(result.dataset_id, result.content_hash, manifest_hash=manifest.manifest_hash,
                                 cpu_capability=manifest.build.torch_cpu_capability)
    if check is not None:
        console.print(f"[green]{check[1]}[/]" if check[0] else f"[yellow]{check[1]}[/]")


@datasets_app.command("list")
def datasets_list(
    root: RootOption = None,
    remote: Annotated[bool, typer.Option("--remote", help="List the catalog of published datasets instead.")] = False,
) -> None:
    """Table of the datasets under the data root (or, with --remote, in the catalog)."""
    if remote:
        _print_catalog(root)
        return
    from icrl_bench.data.dataset import list_local
    from icrl_bench.paths import data_root

    entries = list_local(root)
    if not entries:
        console.print(f"No datasets under {data_root(root)}. Build one: icrl-bench build-dataset darkroom --preset small")
        return
    table = Table(title=f"Datasets under {data_root(root)}", caption="shape: tasks x streams x steps; `icrl-bench datasets show ID` for more")
    for column in ("id", "source", "shape", "size", "hash"):
        table.add_column(column, justify="right" if column == "size" else "left", no_wrap=column in ("id", "shape", "size"))
    for entry in entries:
        m = entry.manifest
        if m is None:
            table.add_row(entry.dataset_id, "[red]unreadable[/]", "", human_bytes(entry.size_bytes), "")
            continue
        table.add_row(entry.dataset_id, m.source.name, f"{m.shape.n_tasks}x{m.shape.n_streams}x{m.shape.n_steps}",
                      human_bytes(entry.size_bytes), m.content_hash[:8])
    console.print(table)


@datasets_app.command("show")
def datasets_show(dataset_id: str, root: RootOption = None) -> None:
    """What a dataset is (size, shapes, source, hash, description): a local one, or one the catalog lists."""
    from icrl_bench.data.describe import describe, fact_rows

    facts = describe(dataset_id, root)
    console.print(f"[bold]{facts.dataset_id}[/]  {escape(facts.description)}")
    grid = Table.grid(padding=(0, 2))
    for label, text in fact_rows(facts, root):
        grid.add_row(f"[bold]{label}[/]", escape(text))
    console.print(grid)


@datasets_app.command("info")
def datasets_info(dataset_id: str, root: RootOption = None, tasks: Annotated[int, typer.Option(help="Task rows to show (0: all).")] = 20) -> None:
    """The manifest and a summary of each task's learning curve."""
    from icrl_bench.data.dataset import load_dataset
    from icrl_bench.data.inspect import learning_summary

    ds = load_dataset(dataset_id, root)
    m = ds.manifest
    console.print(f"[bold]{m.dataset_id}[/]  {m.description}")
    facts = Table.grid(padding=(0, 2))
    took = "" if m.build.wall_time_s is None else f" in {m.build.wall_time_s:.1f} s"  # None: imported, not built here
    for key, value in (
        ("env", f"{m.env} ({m.env_spec.gym_id}, horizon {m.env_spec.horizon})"),
        ("shape", f"{m.shape.n_tasks} tasks x {m.shape.n_streams} streams x {m.shape.n_steps} steps"),
        ("split", f"{int((ds.split == 0).sum())} train / {int((ds.split == 1).sum())} test tasks ({m.split.rule if m.split.train_ratio is None else 'paper split'}, seed {m.split.seed})"),
        ("source", f"{m.source.name} " + ", ".join(f"{k}={v}" for k, v in m.source.hyperparameters.items())),
        ("seeds", f"base {m.seeds.base}: {m.seeds.rule}"),
        ("content hash", m.content_hash),
        ("built", f"{m.provenance.created_at}{took}, code {m.provenance.code_commit}"),
        ("packages", ", ".join(f"{k} {v}" for k, v in m.provenance.packages.items())),
        ("path", str(ds.path)),
    ):
        facts.add_row(f"[bold]{key}[/]", value)
    console.print(facts)
    summary = learning_summary(ds)
    table = Table(title="Learning curves: mean episode return over streams")
    columns = ["row", "task", "params", "split", "first episode", "last episode"]
    columns += ["first success", "last success"] if summary.has_success else []
    columns += ["oracle"] if summary.mean_max is not None else []
    for column in columns:
        table.add_column(column, justify="right")
    shown = summary.rows if tasks == 0 else summary.rows[:tasks]
    for row in shown:
        cells = [str(row.row), str(row.task), ",".join(f"{v:g}" if isinstance(v, int) else f"{v:.3f}" for v in row.params)]
        cells += ["test" if row.test else "train", f"{row.first_return:.2f}", f"{row.last_return:.2f}"]
        cells += [f"{row.first_success:.2f}", f"{row.last_success:.2f}"] if summary.has_success else []
        cells += [f"{row.max_return:g}"] if row.max_return is not None else []
        table.add_row(*cells)
    console.print(table)
    if len(shown) < len(summary.rows):
        console.print(f"({len(summary.rows) - len(shown)} more rows: --tasks 0 shows all)")
    oracle = f" (oracle {summary.mean_max:.2f})" if summary.mean_max is not None else ""
    success = (
        f"; success rate of the first episode {summary.mean_success('first'):.2f}, of the last {summary.mean_success('last'):.2f}"
        if summary.has_success
        else ""
    )
    console.print(
        f"Mean over tasks: first episode {summary.mean_first:.2f}, last episode {summary.mean_last:.2f}{oracle}{success}; "
        f"the last episode beats the first on {summary.n_improved}/{len(summary.rows)} tasks."
    )


@datasets_app.command("verify")
def datasets_verify(dataset_id: str, root: RootOption = None) -> None:
    """Recompute every array's sha256 and compare with the manifest."""
    from icrl_bench.data.dataset import load_dataset

    ds = load_dataset(dataset_id, root)
    content = ds.verify()
    console.print(f"[green]ok[/] {dataset_id}: {len(ds.array_names)} arrays match their hashes (content hash {content[:12]}).")


@datasets_app.command("delete")
def datasets_delete(dataset_id: str, root: RootOption = None, yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask.")] = False) -> None:
    """Delete a local dataset (asks first)."""
    from icrl_bench.data.dataset import dataset_path, delete_dataset, missing_dataset_error

    path = dataset_path(dataset_id, root)
    if not path.exists():
        raise missing_dataset_error(dataset_id, root)
    if not yes and not typer.confirm(f"Delete {dataset_id} at {path}?", default=False):
        console.print("Nothing deleted.")
        raise typer.Exit(1)
    delete_dataset(dataset_id, root)
    console.print(f"Deleted {dataset_id}.")


@datasets_app.command("import")
def datasets_import(
    path: Annotated[Path, typer.Argument(help="A folder written by `datasets export --format hf`, or an official DICP HDF5 file.")],
    env: Annotated[str | None, typer.Option(help="Grid world an HDF5 file was collected on (dicp-hdf5 only: an export names its env).")] = None,
    format: Annotated[str | None, typer.Option("--format", help="hf or dicp-hdf5 (default: detected: a folder with icrl_bench/export.json is hf).")] = None,
    dataset_id: Annotated[str | None, typer.Option("--id", help="Id to publish a dicp-hdf5 import under (default: <env>-dicp-import-v1).")] = None,
    root: RootOption = None,
) -> None:
    """Import the mirror of `datasets export` (verified by hash), or a file of another tool, as a local dataset."""
    format = format or ("hf" if path.is_dir() else "dicp-hdf5")
    if format == "hf":
        if dataset_id is not None:
            raise IcrlBenchError("an hf export keeps the id it was exported with; drop --id (the content hash pins what it is).")
        from icrl_bench.data.hf_export import import_hf

        result = import_hf(path, root=root, origin={"source": str(path.resolve()), "spec": "datasets import"})
        if result.already_present:
            console.print(f"{result.dataset_id} is already at {result.path} with the same content hash {result.content_hash[:12]}.")
        else:
            console.print(f"[green]imported[/] {path} as {result.dataset_id} at {result.path} (verified, hash {result.content_hash[:12]}).")
        return
    if format != "dicp-hdf5":
        raise IcrlBenchError(f"unknown import format {format!r}; known: hf (an export folder), dicp-hdf5.")
    if env is None:
        raise IcrlBenchError(f"--env is needed for a dicp-hdf5 file (the grid world {path.name} was collected on, e.g. --env darkroom).")
    from icrl_bench.data.dicp_hdf5 import import_dicp_hdf5

    result = import_dicp_hdf5(path, env, dataset_id=dataset_id, root=root)
    console.print(f"[green]imported[/] {path} as {result.dataset_id} at {result.path} (hash {result.content_hash[:12]}).")


@datasets_app.command("export")
def datasets_export(
    dataset_id: str,
    out: Annotated[Path, typer.Option("--out", help="Folder to write; must not exist yet.")],
    format: Annotated[str, typer.Option("--format", help="Export format: hf (Hugging Face Datasets: Parquet + dataset card).")] = "hf",
    license: Annotated[str, typer.Option(help="License named in the dataset card.")] = "cc-by-4.0",
    root: RootOption = None,
) -> None:
    """Write a dataset as Parquet shards with a Hub dataset card (what `push` uploads)."""
    if format != "hf":
        raise IcrlBenchError(f"unknown export format {format!r}; known: hf.")
    from icrl_bench.data.hf_export import export_hf

    result = export_hf(dataset_id, out, root=root, license=license)
    n_files = sum(name.endswith(".parquet") for name in result.files)
    console.print(
        f"[green]exported[/] {dataset_id} to {result.path}: {n_files} Parquet files, {human_bytes(result.parquet_bytes)}, "
        f"in {result.wall_time_s:.1f} s (hash {result.content_hash[:12]})."
    )


@datasets_app.command("push")
def datasets_push(
    dataset_id: str,
    repo: Annotated[str, typer.Option("--repo", help="Hub dataset repo ORG/NAME (one per family), or a directory remote.")],
    token: Annotated[str | None, typer.Option("--token", help="Hub token with write access (default: HF_TOKEN or `hf auth login`).")] = None,
    license: Annotated[str, typer.Option(help="License named in the dataset card.")] = "cc-by-4.0",
    allow_dirty: Annotated[bool, typer.Option("--allow-dirty", help="Publish a dataset built from uncommitted code (private experiments only: no commit rebuilds it).")] = False,
    root: RootOption = None,
) -> None:
    """Publish a local dataset under its version tag (never overwrites a published version)."""
    from icrl_bench.data.hub import push_dataset

    result = push_dataset(dataset_id, repo, root=root, token=token, license=license, allow_dirty=allow_dirty)
    console.print(
        f"[green]pushed[/] {dataset_id} to {result.where} ({human_bytes(result.parquet_bytes)} of Parquet, hash {result.content_hash[:12]}). "
        f"Catalog entry: repo {repo}, revision {result.tag}, content_hash {result.content_hash}"
    )


@datasets_app.command("download")
def datasets_download(
    spec: Annotated[str, typer.Argument(help="ORG/NAME@REVISION, hf://datasets/ORG/NAME@REVISION, a directory remote, or a catalog id.")],
    root: RootOption = None,
    mirror: Annotated[Path | None, typer.Option("--mirror", help="Read Hub repos ORG/NAME from MIRROR/ORG/NAME (default: $ICRL_BENCH_MIRROR).")] = None,
    token: Annotated[str | None, typer.Option("--token", help="Hub token for private repos (default: HF_TOKEN or `hf auth login`).")] = None,
    content_hash: Annotated[str | None, typer.Option("--hash", help="Refuse the dataset unless it has this content hash.")] = None,
) -> None:
    """Fetch a published dataset, verify every hash, and publish it under the data root."""
    from icrl_bench.data.hub import download_dataset

    result = download_dataset(spec, root=root, mirror=mirror, token=token, expected_hash=content_hash)
    if result.already_present:
        console.print(f"{result.dataset_id} is already at {result.path} with the same content hash {result.content_hash[:12]}.")
    else:
        console.print(f"[green]downloaded[/] {result.dataset_id} from {result.source} to {result.path} (verified, hash {result.content_hash[:12]}).")


def _print_catalog(root: Path | None) -> None:
    from icrl_bench.data.catalog import catalog_path
    from icrl_bench.data.describe import catalog_status

    rows = catalog_status(root=root)
    if not rows:
        console.print(f"The catalog {catalog_path()} lists no published datasets yet; download by ORG/NAME@REVISION.")
        return
    table = Table(title=f"Published datasets ({catalog_path()})",
                  caption="steps: transitions (tasks x streams x steps); size: the download; where: shipped in the repository, "
                          "on the Hub, or build-only (not published); `icrl-bench datasets show ID` for all of it")
    cells = []
    for row in rows:
        shape = row["shape"]
        steps = f"{shape['n_tasks'] * shape['n_streams'] * shape['n_steps'] / 1e6:.2f}M" if shape else "-"
        size = human_bytes(row["download_bytes"]) if row["download_bytes"] is not None else "-"
        where = "build-only" if not row["repo"] else "shipped" if row["repo"].startswith(("./", "../")) else "hub"
        cells.append([row["dataset_id"], steps, size, where, row["local"]])
    columns = ("id", "steps", "size", "where", "local")
    widths = [max(len(column), *(len(c[i]) for c in cells)) for i, column in enumerate(columns)]
    for column, width in zip(columns, widths):
        table.add_column(column, justify="right" if column in ("steps", "size") else "left", no_wrap=True, min_width=width)
    # One line per dataset: the description takes what the terminal has left (3 characters of border per column);
    # a narrow terminal gets the descriptions below the table instead.
    room = console.width - sum(widths) - 3 * (len(columns) + 1) - 1
    if room >= 30:
        table.add_column("description", no_wrap=True, overflow="ellipsis", max_width=room)
    for row, cell in zip(rows, cells):
        table.add_row(*cell, *([escape(" ".join(row["description"].split()))] if room >= 30 else []))
    console.print(table)
    if room < 30:
        for row in rows:
            console.print(f"[bold]{row['dataset_id']}[/]: {escape(' '.join(row['description'].split()))}")

# --- benchmark: evaluate, agents, leaderboard (icrl_bench.bench.harness / .leaderboard) -------------

agents_app = typer.Typer(help="The agents the benchmark knows.", no_args_is_help=True)
app.add_typer(agents_app, name="agents")
leaderboard_app = typer.Typer(help="Submit, show, render and verify leaderboard entries.", no_args_is_help=True)
app.add_typer(leaderboard_app, name="leaderboard")
LeaderboardDirOption = Annotated[Path | None, typer.Option("--dir", help="Leaderboard directory (default: $ICRL_BENCH_LEADERBOARD, else the repository's leaderboard/; from an installed package, a user data directory seeded with the shipped entries).")]
results_app = typer.Typer(help="Results files of `evaluate`: re-summarize them, compare them per task, export score matrices.", no_args_is_help=True)
app.add_typer(results_app, name="results")


@app.command("train")
def train_cmd(
    agent: Annotated[str | None, typer.Option(help="Agent to train: ad, dicp-ad, dpt, dicp-dpt, idt, dicp-idt (no dpt on Meta-World).")] = None,
    dataset: Annotated[str | None, typer.Option(help="Dataset id, e.g. darkroom-small-v3.")] = None,
    preset: Annotated[str | None, typer.Option(help="Named preset of the config (e.g. cpu); default: the paper's settings.")] = None,
    device: Annotated[str, typer.Option(help="auto, cpu, cuda or cuda:N.")] = "auto",
    resume: Annotated[Path | None, typer.Option(help="Continue the run in this directory exactly.")] = None,
    steps: Annotated[int | None, typer.Option(help="Total steps (overrides the config; the schedule follows).")] = None,
    config: Annotated[Path | None, typer.Option(help="Config YAML (default: baselines/<env>/<agent>.yaml).")] = None,
    out: Annotated[Path, typer.Option(help="Directory for run directories.")] = Path("runs"),
    threads: Annotated[int | None, typer.Option(help="Torch CPU threads (default: torch's; 1 is faster on a busy CPU).")] = None,
    set_: Annotated[list[str] | None, typer.Option("--set", help="Config override train.KEY=VALUE or model.KEY=VALUE (e.g. train.lr=3e-3), repeatable.")] = None,
    time_budget: Annotated[float | None, typer.Option(help="Fit the run into this many seconds: the speed of the first steps sets the total steps (at most the config's).")] = None,
    log: Annotated[list[str] | None, typer.Option("--log", help="Mirror metrics.jsonl to tensorboard and/or wandb (optional extras; W&B offline unless WANDB_MODE is set), repeatable or comma-separated.")] = None,
    init_from: Annotated[Path | None, typer.Option(help="Start a new run from this checkpoint's weights (same network; a DICP agent from its imitation agent: the DICP heads start fresh). A documented variant, recorded in run.json.")] = None,
    root: RootOption = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar.")] = False,
) -> None:
    """Train an in-context agent on a learning-history dataset (checkpoints, metrics, resumable)."""
    from icrl_bench.training import train

    if resume is None:
        check_writable(out, f"--out {out}", "choose a directory you can write to")
    result = train(agent, dataset, preset, device, out, root, steps, resume, config, show_progress=not quiet, console=err_console,
                   threads=threads, overrides=set_, time_budget_s=time_budget, log_to=log, init_from=init_from)
    val = ", ".join(f"{k} {v:.3f}" for k, v in result.val_metrics.items() if k.startswith(("val_acc", "val_mse")))
    console.print(
        f"[green]trained[/] to step {result.step} in {result.wall_time_s:.0f} s ({result.samples_per_s:,.0f} samples/s)"
        f"{'; ' + val if val else ''}. Run: {result.run_dir}"
    )


@app.command("evaluate")
def evaluate_cmd(
    agent: Annotated[str, typer.Option(help="Agent: a name from `icrl-bench agents list`, or package.module:Class.")],
    checkpoint: Annotated[Path | None, typer.Option(help="Trained agent checkpoint (default: the shipped one, if any).")] = None,
    env: Annotated[str, typer.Option(help="Environment or protocol (darkroom, darkroom-permuted, dark-key-to-door, metaworld-ml1-<task>, metaworld-ml10, or e.g. darkroom/v1).")] = "darkroom",
    seeds: Annotated[str | None, typer.Option(help="Comma-separated seeds (default: the protocol's: 0,1,2,3,4 on the grid worlds, 0,1,2 on Meta-World).")] = None,
    episodes: Annotated[int | None, typer.Option(help="In-context episodes (default: the protocol's: 50 on the grid worlds, the official 100-2,000 on Meta-World).")] = None,
    tasks: Annotated[int | None, typer.Option(help="Only the first N test tasks (a smoke run; default: all of the protocol's).")] = None,
    goals: Annotated[str, typer.Option(help="test (the protocol), or validation: the split's first train goals, as many as its test goals (grid worlds), which runs trained with train.hold_out_validation_goals never saw: for choosing between runs without looking at a test goal; never submittable.")] = "test",
    set_: Annotated[list[str] | None, typer.Option("--set", help="Agent setting KEY=VALUE (JSON value), repeatable.")] = None,
    beam: Annotated[int | None, typer.Option(help="DICP beam size beam_k (0 = no planning; default for dicp-* agents: the paper's 10).")] = None,
    samples: Annotated[int | None, typer.Option(help="DICP candidate actions per step on continuous-action envs (0 or 1 = no planning; default for dicp-* agents: the paper's 10).")] = None,
    threads: Annotated[int, typer.Option(help="Torch CPU threads. 1 (the default) is 10-40x faster than 2 on a CPU busy with other jobs; the networks are small.")] = 1,
    executor: Annotated[str | None, typer.Option(help="Run sharded, one job per seed x task group: local (processes here) or ray (default: one batch in this process). Finished shards are kept in OUT/.shards: the same command continues a stopped run.")] = None,
    address: AddressOption = None,
    task_groups: Annotated[int, typer.Option(help="With --executor: test tasks split into this many groups per seed (more shards, smaller batches).")] = 1,
    workers: Annotated[int | None, typer.Option(help="With --executor: shards at once (default: all cores, or the Ray cluster's CPUs).")] = None,
    out: Annotated[Path, typer.Option(help="Directory for the results JSON and plot.")] = Path("results"),
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar.")] = False,
) -> None:
    """Run an agent under the standard protocol: results JSON, learning-curve plot, summary table."""
    from rich.progress import Progress

    from icrl_bench.agents.base import privileged_settings
    from icrl_bench.bench.harness import evaluate, save_results
    from icrl_bench.bench.reporting import results_table

    if out.exists() and not out.is_dir():
        raise IcrlBenchError(f"--out {out} is a file; give a directory for the results JSON and plot.")
    check_writable(out, f"--out {out}", "choose a directory you can write to")
    seed_list = _parse_seeds(seeds)
    settings = _parse_settings(set_ or [])
    if goals not in ("test", "validation"):
        raise IcrlBenchError(f"--goals must be test or validation, got {goals!r}.")
    if goals == "validation":
        from icrl_bench.bench.protocols import get_protocol

        env = get_protocol(env).on_validation_goals().name
    if samples is not None:
        settings["samples"] = samples
    if threads < 1:
        raise IcrlBenchError(f"--threads must be >= 1, got {threads}.")
    from icrl_bench.executors import ExecutorConfig

    if executor is None and (address is not None or workers is not None or task_groups != 1):
        raise IcrlBenchError("--address, --workers and --task-groups shard an evaluation: add --executor local or --executor ray.")
    config = None if executor is None else ExecutorConfig(executor, workers, address)
    import torch

    torch.set_num_threads(threads)
    with Progress(console=err_console, disable=quiet, transient=True) as bar:
        task = bar.add_task(f"evaluating {agent} on {env}", total=None)
        saved: list[Path] = []
        results = evaluate(agent, checkpoint, env, seed_list, episodes, settings, progress=lambda done, total: bar.update(task, completed=done, total=total),
                           beam_k=beam, n_tasks=tasks, executor=config, task_groups=task_groups,
                           shard_dir=None if config is None else out / ".shards",  # a stopped sharded run continues
                           save=lambda made: saved.extend(save_results(made, out)))
    json_path, png_path = saved
    console.print(results_table(results))
    console.print(f"[green]wrote[/] {json_path} and {png_path}")
    if goals == "validation":
        console.print("[yellow]validation goals: for choosing between runs; this run cannot be submitted to the leaderboard.[/]")
    elif privileged := privileged_settings(results["agent"]["settings"]):
        console.print(f"[yellow]{', '.join(privileged)} reads the test tasks' parameters: "
                      "this run compares with a paper that did the same; it cannot be submitted to the leaderboard.[/]")
    elif not results["standard"]:
        console.print("[yellow]non-standard seeds, episodes or tasks: this run cannot be submitted to the leaderboard.[/]")


@app.command("reproduce")
def reproduce_cmd(
    env: Annotated[str, typer.Argument(help="darkroom, darkroom-permuted or dark-key-to-door (its small preset).")],
    agents: Annotated[str | None, typer.Option(help="Comma-separated subset (default: ad,dicp-ad,dpt,dicp-dpt,idt,dicp-idt).")] = None,
    budget: Annotated[str, typer.Option(help="laptop (CPU; the cpu preset where no laptop budget is fixed yet), cpu, paper, or tiny (a smoke run).")] = "laptop",
    device: Annotated[str, typer.Option(help="cpu, cuda or cuda:N: building, training and evaluation.")] = "cpu",
    from_shipped: Annotated[bool, typer.Option("--from-shipped", help="Evaluate the shipped checkpoints of baselines/ only.")] = False,
    force: Annotated[bool, typer.Option("--force", help="Redo finished stages.")] = False,
    out: Annotated[Path | None, typer.Option(help="Report directory (default: reproduction/<env>/ in the repository; from an installed package, ./reproduction/<env>/).")] = None,
    seeds: Annotated[str | None, typer.Option(help="Evaluation seeds (default: the protocol's 0,1,2,3,4).")] = None,
    episodes: Annotated[int | None, typer.Option(help="In-context episodes (default: the protocol's 50).")] = None,
    tasks: Annotated[int | None, typer.Option(help="Only the first N test tasks (a smoke run).")] = None,
    jobs: Annotated[int, typer.Option(help="Single-thread processes at once (e.g. 2 on a 2-core laptop): agents trained, then agents (Darkroom-Permuted, Dark Key-to-Door on a CPU: seeds) evaluated.")] = 1,
    ranks: Annotated[int, typer.Option(help="Train each agent as this many torchrun ranks of one thread, one agent at a time, the preset's batch split between them (how the shipped checkpoints whose run.json says world_size 2 were trained).")] = 1,
    root: RootOption = None,
) -> None:
    """Rebuild a paper's grid-world result: dataset, training, evaluation and a report beside the paper's numbers (resumable)."""
    from icrl_bench.bench.reproduction import reproduce

    if not from_shipped:  # it builds the dataset: on the published bytes' kernels (its training and evaluation too)
        from icrl_bench.data.build import pin_cpu_kernels

        pin_cpu_kernels()
    report = reproduce(env, agents, budget, device, out, root, from_shipped, force, _parse_seeds(seeds), episodes, tasks,
                       log=lambda text: err_console.print(text, markup=False), jobs=jobs, ranks=ranks)
    console.print(f"[green]wrote[/] {report} and {report.with_name('curves.png')}")


@agents_app.command("list")
def agents_list() -> None:
    """Built-in agents and installed plugins."""
    from icrl_bench.agents.registry import list_agents

    table = Table(title="Agents (`icrl-bench evaluate --agent NAME`; or any package.module:Class)")
    for column in ("name", "needs checkpoint", "origin", "description"):
        table.add_column(column)
    for info in list_agents():
        table.add_row(info.name, "yes" if info.needs_checkpoint else "no", info.origin, info.description)
    console.print(table)


@leaderboard_app.command("submit")
def leaderboard_submit(results: Annotated[Path, typer.Argument(help="Results JSON written by `icrl-bench evaluate`.")], dir: LeaderboardDirOption = None) -> None:
    """Validate a results file and add it to the leaderboard."""
    from icrl_bench.bench.leaderboard import submit

    path = submit(results, dir)
    console.print(f"[green]accepted[/] {results} as {path}; run `icrl-bench leaderboard render` to update the page.")


@leaderboard_app.command("show")
def leaderboard_show(
    env: Annotated[str | None, typer.Option(help="Only this environment or protocol.")] = None,
    dir: LeaderboardDirOption = None,
    format: Annotated[str, typer.Option("--format", help="table (fits the terminal), md, csv or json.")] = "table",
) -> None:
    """Print the ranking per protocol (learned agents ranked; reference agents apart)."""
    from icrl_bench.bench import leaderboard_view as view
    from icrl_bench.bench.leaderboard import board_dir, ranking

    if format not in view.FORMATS:
        raise IcrlBenchError(f"unknown format {format!r}; use one of {', '.join(view.FORMATS)}.")
    groups = ranking(env, dir)
    base = board_dir(dir)
    if format == "json":
        typer.echo(json.dumps(view.records(groups, base), indent=1))
    elif format == "csv":
        typer.echo(view.to_csv(groups, base), nl=False)
    elif not groups:
        console.print("No leaderboard entries" + (f" for {env}" if env else "") + ". Add one: icrl-bench leaderboard submit results/NAME-ENV.json")
    elif format == "md":
        typer.echo(view.markdown(groups, base))
    else:
        for name, entries in groups.items():
            for table in view.terminal_tables(name, entries, console.width):
                console.print(table)


@leaderboard_app.command("render")
def leaderboard_render(dir: LeaderboardDirOption = None) -> None:
    """Write leaderboard/README.md, index.html and the learning-curve plots."""
    from icrl_bench.bench.leaderboard import render

    rendered = render(dir)
    console.print(f"[green]wrote[/] {rendered.readme}, {rendered.html} and {len(rendered.plots)} plot(s).")


@leaderboard_app.command("verify")
def leaderboard_verify(
    entry: Annotated[Path, typer.Argument(help="An entry JSON under leaderboard/entries/.")],
    threads: Annotated[int, typer.Option(help="Torch CPU threads (1, the default, as `evaluate`: the networks are small).")] = 1,
    device: Annotated[str | None, typer.Option(help="cpu, cuda or cuda:N (default: the device the entry was evaluated on).")] = None,
) -> None:
    """Re-run an entry's evaluation from its agent and checkpoint, and compare."""
    from icrl_bench.bench.leaderboard import verify
    from icrl_bench.devices import cpu_threads

    if threads < 1:
        raise IcrlBenchError(f"--threads must be >= 1, got {threads}.")
    with cpu_threads(threads):
        result = verify(entry, device)
    if result.identical:
        console.print(f"[green]verified[/] {entry}: the re-run reproduced every episode return (final return {result.rerun_final:.3f}).")
    elif result.within_ci:
        console.print(f"[yellow]consistent[/] {entry}: not bit-identical (max diff {result.max_abs_diff:.3g}), final return {result.rerun_final:.3f} within the entry's 95% CI.")
    else:
        raise IcrlBenchError(f"{entry} did not reproduce: final return {result.rerun_final:.3f} vs claimed {result.claimed_final:.3f} (outside its 95% CI).")


@results_app.command("upgrade")
def results_upgrade(files: Annotated[list[Path], typer.Argument(help="Results JSON files (leaderboard entries too); rewritten in place.")]) -> None:
    """Recompute each file's summary from its curves under the current metric definitions (results schema 1 -> 2)."""
    from icrl_bench.bench.results import upgrade

    for path in files:
        console.print(f"[green]upgraded[/] {path}" if upgrade(path) else f"{path} is up to date.")


@results_app.command("relocate")
def results_relocate(
    file: Annotated[Path, typer.Argument(help="A results JSON file, rewritten in place.")],
    checkpoint: Annotated[Path, typer.Option(help="Another copy of the checkpoint it evaluated (e.g. the folder it was shipped to).")],
) -> None:
    """Point results at a shipped copy of their checkpoint, checked by the weights' hash (nothing else changes)."""
    from icrl_bench.bench.results import relocate

    before = relocate(file, checkpoint)
    console.print(f"[green]relocated[/] {file}: checkpoint {before or '(the agent default)'} -> {checkpoint} (same weights)")


@results_app.command("tasks")
def results_tasks(
    files: Annotated[list[Path], typer.Argument(help="Results JSON files of one protocol (leaderboard entries too).")],
    last: Annotated[int | None, typer.Option(help="Episodes averaged at the end of each run (default: the protocol's final window, 5).")] = None,
) -> None:
    """Final return per test task, side by side: which tasks an agent solves and which it never does."""
    from icrl_bench.bench.reporting import per_task_table
    from icrl_bench.bench.results import load_results

    console.print(per_task_table([load_results(path) for path in files], last))


@results_app.command("export")
def results_export(
    files: Annotated[list[Path] | None, typer.Argument(help="Results JSON files of one protocol (or use --env).")] = None,
    out: Annotated[Path, typer.Option("--out", help="scores.npz (np.load) or scores.json: {agent: [runs, tasks]}.")] = Path("scores.npz"),
    format: Annotated[str, typer.Option("--format", help="rliable: one score matrix [runs, tasks] per agent.")] = "rliable",
    metric: Annotated[str | None, typer.Option(help="Summary key to export (default: the protocol's headline: normalized_score, or best_success_rate).")] = None,
    env: Annotated[str | None, typer.Option(help="Export every leaderboard entry of this environment or protocol instead of files.")] = None,
    dir: LeaderboardDirOption = None,
) -> None:
    """Write score matrices for rliable (performance profiles, probability of improvement, IQM CIs)."""
    from icrl_bench.bench.leaderboard import ranking
    from icrl_bench.bench.results import EXPORT_FORMATS, export_rliable, load_results

    if format not in EXPORT_FORMATS:
        raise IcrlBenchError(f"unknown export format {format!r}; known: {', '.join(EXPORT_FORMATS)}.")
    if bool(files) == (env is not None):
        raise IcrlBenchError("give results files or --env ENV (the leaderboard's entries), not both and not neither.")
    if env is not None:
        groups = ranking(env, dir)
        if len(groups) != 1:
            raise IcrlBenchError(f"no leaderboard entries for {env}; see `icrl-bench leaderboard show`." if not groups else
                                 f"{env} has entries under several protocols ({', '.join(groups)}); pass one, e.g. --env {next(iter(groups))}.")
        documents = [(f"{name} entry {i + 1}", entry) for name, entries in groups.items() for i, entry in enumerate(entries)]
    else:
        documents = [(str(path), load_results(path)) for path in files or []]
    check_writable(out.parent, f"--out {out}", "choose a directory you can write to")
    export = export_rliable(documents, out, metric)
    shapes = ", ".join(f"{label} {runs}x{tasks}" for label, (runs, tasks) in export.shapes.items())
    console.print(f"[green]wrote[/] {export.path}: {export.metric} on {export.protocol}, [runs, tasks] per agent: {escape(shapes)}")


def _parse_seeds(text: str | None) -> list[int] | None:
    if text is None:
        return None
    try:
        return [int(s) for s in text.split(",") if s.strip()]
    except ValueError:
        raise IcrlBenchError(f"--seeds must be comma-separated integers such as 0,1,2,3,4; got {text!r}.") from None


def _parse_settings(pairs: list[str]) -> dict:
    import json

    settings = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise IcrlBenchError(f"--set takes KEY=VALUE, got {pair!r}.")
        try:
            settings[key] = json.loads(value)
        except json.JSONDecodeError:
            settings[key] = value
    return settings


def main() -> None:
    """Entry point of the `icrl-bench` script."""
    try:
        app()
    except KeyboardInterrupt:  # one that lands while an earlier interrupt's exit unwinds (seen under load): still 130
        err_console.print("[yellow]interrupted[/]")
        sys.exit(130)


if __name__ == "__main__":
    main()
