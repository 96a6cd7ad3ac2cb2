"""Every `t2itool ...` command line shown in README.md, docs/ and examples/*.md works against the real CLI.

Each command in a fenced code block is collected (continuations joined, `#` comments dropped), its paths are replaced
by files built once on the small shapes data, and it is parsed by the real Typer command tree, so every subcommand,
flag and argument the docs show exists. Where that is cheap it also runs: `train` with `--dry-run` (presets, `--set`
keys and `--config` files resolve), `models`, `info`, `prep cub` / `coco` / `folder` on tiny fake trees (the
conftest's), and `sample` / `score` on a one-step dfgan run (score with the tiny feature extractor instead of
Inception, whose weights are not on this machine). The run folder names the docs cite must be the names their own
`train` commands would produce.

Parsed only (not run), and why:

| command                        | reason                                                                       |
|--------------------------------|------------------------------------------------------------------------------|
| pretrain-damsm                 | downloads the ImageNet Inception-v3 backbone, trains for epochs              |
|                                | (run with a random backbone in tests/test_damsm_pretrain.py)                 |
| import-damsm                   | its inputs are AttnGAN's released encoder files (tests/test_damsm_pretrain.py) |
| import-weights                 | its input is an official release checkpoint (tests/test_import_weights.py)   |
| torchrun ... -m t2itool ...    | needs torchrun's process-group environment                                   |
| score --fid-flavor torchvision | needs torchvision's Inception-v3 weights (a download); the tiny stand-in     |
|                                | extractor replaces only the tf flavour's                                     |

Parse-only commands still have their values checked where that needs no input files: `pretrain-damsm`'s preset and
epochs resolve (`PretrainConfig.resolved`), `import-weights --preset` is one of the model's presets.

A command that equals one already run except for its output paths (the README repeating a docs page) is parsed and
not run again. `--dry-run` is added to `train`, `--workers 0` to `prep`, `--device cpu` replaces `cuda`,
`--per-caption` is cut to 2, `score --generate` makes 10 images (`--num-images`; IS needs 10) and reports `--json`.
"""

from __future__ import annotations

import contextlib
import functools
import json
import pickle
import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
import typer
from typer.testing import CliRunner

from t2itool.cli.main import app

ROOT = Path(__file__).resolve().parent.parent
DOC_FILES = [
    ROOT / "README.md",
    *sorted((ROOT / "docs").glob("*.md")),
    *sorted((ROOT / "docs" / "models").glob("*.md")),
    *sorted((ROOT / "examples").glob("*.md")),
]
SCRIPTS = sorted((ROOT / "examples").glob("*.sh"))  # README: "examples/cub_pipeline.sh runs exactly this"
SHELL_FENCES = {"", "sh", "bash", "shell", "console"}  # ```python / ```toml blocks hold no command lines

# (command path, reason) for commands that are parsed only; the first matching prefix wins.
PARSE_ONLY: list[tuple[tuple[str, ...], str]] = [
    (("pretrain-damsm",), "downloads the ImageNet Inception-v3 backbone and trains for epochs"),
    (("import-damsm",), "inputs are AttnGAN's released encoders"),
    (("import-weights",), "input is an official release checkpoint"),
]
TORCHRUN_REASON = "needs torchrun's process group environment"
TORCHVISION_REASON = "needs torchvision's Inception-v3 weights (a download), which no stand-in replaces"

runner = CliRunner()


@dataclass
class DocCommand:
    where: str  # file:line, relative to the repository
    line: str  # the logical line as the docs show it (continuations joined)
    argv: list[str]  # the arguments after `t2itool`
    launcher: str = "t2itool"  # or "torchrun" for `torchrun ... -m t2itool ...`
    notes: list[str] = field(default_factory=list)


def _logical_lines(text: str, script: bool = False):
    """(line number, logical line) of each line inside shell-like fenced blocks (every line of a `script`), `\\`
    continuations joined."""
    lines = text.splitlines()
    fence: str | None = "sh" if script else None
    index = 0
    while index < len(lines):
        stripped = lines[index].strip()
        if stripped.startswith("```") and not script:
            fence = None if fence is not None else stripped[3:].strip().lower()
            index += 1
            continue
        if fence is None or fence not in SHELL_FENCES:
            index += 1
            continue
        start, joined = index + 1, lines[index].rstrip()
        while joined.endswith("\\") and index + 1 < len(lines):
            index += 1
            joined = joined[:-1].rstrip() + " " + lines[index].strip()
        yield start, joined
        index += 1


def collect() -> list[DocCommand]:
    commands = []
    for path in [*DOC_FILES, *SCRIPTS]:
        source = path.read_text(encoding="utf-8")
        defaults = dict(re.findall(r"^(\w+)=\$\{\1:-([^}]*)\}", source, re.M))  # NAME=${NAME:-default}
        for number, line in _logical_lines(source, script=path.suffix == ".sh"):
            text = line.strip().removeprefix("$ ")
            if path.suffix == ".sh":  # the script's defaults; other variables ($RUN) are paths substituted below
                text = re.sub(r"\$\{?(\w+)\}?", lambda m, known=defaults: known.get(m.group(1), m.group(0)), text)
            if not (text.startswith("t2itool ") or " -m t2itool " in text):
                continue  # make, pip, python, folder listings
            try:
                tokens = shlex.split(text, comments=True)
            except ValueError as exc:  # an unbalanced quote in a command line is itself a doc bug
                raise AssertionError(f"{path.relative_to(ROOT)}:{number}: {exc}: {line}") from None
            where = f"{path.relative_to(ROOT)}:{number}"
            if tokens[:1] == ["t2itool"]:
                commands.append(DocCommand(where, text, tokens[1:]))
            elif "-m" in tokens and tokens[tokens.index("-m") + 1 : tokens.index("-m") + 2] == ["t2itool"]:
                launcher = tokens[0]
                commands.append(DocCommand(where, text, tokens[tokens.index("-m") + 2 :], launcher))
    return commands


COMMANDS = collect()


def test_the_docs_show_commands() -> None:
    """Guards the collector itself: a regression in it must not make the parametrised test vacuous."""
    assert len(COMMANDS) >= 60
    assert {c.argv[0] for c in COMMANDS} >= {"prep", "info", "pretrain-damsm", "train", "sample", "score", "models"}


# --- the files a doc path stands for ---------------------------------------------------------------------------------


@dataclass
class DocFiles:
    data: str  # shapes HDF5 file
    damsm: str  # DAMSM checkpoint for its vocabulary
    run: Path  # a one-step dfgan run folder
    snapshot: Path  # its snapshot file
    samples: Path  # a samples folder made by `sample --split test`
    captions: Path  # a captions file, one a line
    flowers: Path  # a tiny `prep folder` input
    split_file: Path  # "<key> train|test" lines for it
    run_toml: Path  # the TOML example of docs/training.md
    cub: Path  # a small CUB tree in AttnGAN's birds layout, with StackGAN's char-CNN-RNN embeddings
    coco: Path  # a small official COCO-2014 tree
    vocab: Path  # an AttnGAN captions.pickle (its vocabulary)


@contextlib.contextmanager
def _one_thread():
    """These commands run small ops (an LSTM over 16 captions, 32 px convolutions): on a shared 2-core machine a second
    intra-op thread spends more time synchronising than computing (10x slower sampling measured)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


@pytest.fixture(scope="module", autouse=True)
def _single_threaded():
    with _one_thread():
        yield


def _toml_block(doc: Path) -> str:
    match = re.search(r"```toml\n(.*?)```", doc.read_text(encoding="utf-8"), re.S)
    assert match, f"{doc}: no ```toml block"
    return match.group(1)


@pytest.fixture(scope="session")
def doc_files(shapes_h5: str, tmp_path_factory) -> DocFiles:
    with _one_thread():
        return _build_doc_files(shapes_h5, tmp_path_factory.mktemp("docs"))


def _build_doc_files(shapes_h5: str, root: Path) -> DocFiles:
    import numpy as np
    from conftest import add_char_cnn_rnn, make_coco_official, make_cub
    from PIL import Image
    from test_train_loop import make_damsm

    from t2itool.training import train

    damsm = make_damsm(shapes_h5, root / "damsm.pt")
    result = train(
        "dfgan", data=shapes_h5, damsm=damsm, out=str(root / "runs"), steps=1, snapshot_every=1, image_size=32,
        batch_size=4, workers=0, grid_every=0, grid_size=4, sets={"ngf": "8", "ndf": "8"},
    )  # fmt: skip
    samples = root / "samples"
    done = runner.invoke(app, ["sample", result.run_dir, "--out", str(samples), "--split", "test", "--device", "cpu"])
    assert done.exit_code == 0, done.output
    captions = root / "captions.txt"
    captions.write_text("a red circle\na small blue square in the top left\n", encoding="utf-8")
    flowers = root / "flowers"
    rng = np.random.default_rng(0)
    keys = []
    for index in range(6):
        key = f"{'more/' if index == 5 else ''}{index:04d}"
        (flowers / key).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 256, (24, 32, 3), dtype=np.uint8)).save(flowers / f"{key}.png")
        (flowers / f"{key}.txt").write_text(f"a purple flower number {index}\nthis flower has yellow stamens\n")
        keys.append(key)
    split_file = root / "split.txt"
    split_file.write_text("".join(f"{k} {'test' if i < 2 else 'train'}\n" for i, k in enumerate(keys)))
    cub = make_cub(root / "birds")
    add_char_cnn_rnn(cub)
    coco = make_coco_official(root / "coco2014")
    vocab = root / "captions.pickle"
    words = ["<end>", "a", "bird", "this", "photo", "of", "dog", "with", "wings"]
    vocab.write_bytes(pickle.dumps([[], [], dict(enumerate(words)), {w: i for i, w in enumerate(words)}], protocol=2))
    run_toml = root / "run.toml"
    run_toml.write_text(_toml_block(ROOT / "docs" / "training.md"), encoding="utf-8")
    return DocFiles(
        data=shapes_h5, damsm=damsm, run=Path(result.run_dir), snapshot=Path(result.snapshot), samples=samples,
        captions=captions, flowers=flowers, split_file=split_file, run_toml=run_toml, cub=cub, coco=coco, vocab=vocab,
    )  # fmt: skip


@pytest.fixture(autouse=True)
def _offline_caches(tmp_path_factory, monkeypatch: pytest.MonkeyPatch) -> None:
    """Reference statistics and hub files go to a temporary folder, never the user's caches."""
    cache = tmp_path_factory.getbasetemp() / "doc-caches"
    monkeypatch.setenv("T2ITOOL_CACHE", str(cache / "t2itool"))
    monkeypatch.setenv("TORCH_HOME", str(cache / "torch"))


# --- substitution ----------------------------------------------------------------------------------------------------

OPTION_ROLES = {
    "--data": "data", "--damsm": "damsm", "--out": "out", "--samples-out": "out", "--resume": "run",
    "--init-from": "init", "--captions": "captions", "--config": "config", "--vocab": "vocab",
    "--discriminator": "absent",
}  # fmt: skip
POSITIONAL_ROLES = {
    ("info",): ["data"], ("sample",): ["run"], ("score",): ["samples"], ("prep", "folder"): ["flowers"],
    ("prep", "cub"): ["cub"], ("prep", "coco"): ["coco"], ("import-damsm",): ["absent", "absent"],
    ("import-weights",): ["model", "absent"], ("models",): ["model"], ("train",): ["model"],
}  # fmt: skip
TRAIN_ELISION = ("--data", "--damsm", "--out")  # what `train MODEL ...` leaves out


@functools.cache
def _root():
    """The click command tree Typer builds from the app (built once: building it takes ~0.1 s)."""
    return typer.main.get_command(app)


def _command(argv: list[str]):
    """The Typer/click command object an argv addresses, and its path of names."""
    command, path = _root(), []
    rest = list(argv)
    while hasattr(command, "commands") and rest and rest[0] in command.commands:
        path.append(rest[0])
        command = command.commands[rest.pop(0)]
    return command, tuple(path)


def _synopsis(tokens: list[str]) -> list[str]:
    """A usage synopsis (`[--preset birds|coco] [--set key=value ...]`) as one concrete command: brackets dropped,
    the first of each `a|b` choice, `...` repetitions dropped."""
    concrete = []
    for token in tokens:
        token = token.strip("[]")
        if token in ("", "..."):
            continue
        if "|" in token and "/" not in token:
            token = token.split("|")[0]
        concrete.append(token.replace("key=value", "ngf=8"))
    return concrete


def substitute(doc: DocCommand, files: DocFiles, tmp: Path) -> list[str]:
    """The doc's argv with every path replaced by a fixture file (inputs) or a fresh path under tmp (outputs)."""
    argv = list(doc.argv)
    command, path = _command(argv)
    if "..." in argv and path == ("train",):
        given = set(argv)
        elided = [t for flag in TRAIN_ELISION if flag not in given for t in (flag, "placeholder")]
        position = argv.index("...")
        argv[position : position + 1] = elided if "--resume" not in given else []
    argv = _synopsis(argv)
    takes_value = {
        name: not (param.is_flag or param.count)
        for param in command.params
        if param.param_type_name == "option"
        for name in (*param.opts, *param.secondary_opts)
    }
    positional = list(POSITIONAL_ROLES.get(path, []))
    if path == ("score",) and "--generate" in argv:
        positional = ["run"]
    counter = iter(range(1000))

    def value(role: str, text: str) -> str:
        name = Path(text.split(":")[0]).name or "out"
        if role == "data":
            return files.data
        if role == "damsm":
            return files.damsm
        if role == "out":
            return str(tmp / f"{next(counter)}-{name}")
        if role == "run":
            return str(files.snapshot if text.endswith(".pt") else files.run)
        if role == "init":
            return str(files.run) + (":" + text.split(":", 1)[1] if ":" in text else "")
        if role == "samples":
            return str(files.samples)
        if role == "captions":
            return str(files.captions)
        if role in ("flowers", "cub", "coco", "vocab"):
            return str(getattr(files, role))
        if role == "split_file":
            return str(files.split_file)
        if role == "config":
            if name == "run.toml":
                return str(files.run_toml)
            assert (ROOT / text).is_file(), f"{doc.where}: --config {text} does not exist"
            return str(ROOT / text)
        if role == "model":
            return "dfgan" if text == "MODEL" else text
        return str(tmp / "absent" / name)  # "absent": parse-only commands never open it

    out, index = argv[: len(path)], len(path)
    while index < len(argv):
        token = argv[index]
        if token.startswith("--"):
            flag = token.split("=")[0]
            role = "split_file" if flag == "--split" and path == ("prep", "folder") else OPTION_ROLES.get(flag)
            if takes_value.get(flag) and "=" not in token and index + 1 < len(argv):
                text = argv[index + 1]
                out += [token, value(role, text) if role else text]
                index += 2
                continue
            out.append(token)
        else:
            role = positional.pop(0) if positional else None
            out.append(value(role, token) if role else token)
        index += 1
    return out


# --- parse, then run what is cheap -----------------------------------------------------------------------------------


def parse_only_reason(doc: DocCommand, path: tuple[str, ...], argv: list[str]) -> str | None:
    if doc.launcher != "t2itool":
        return TORCHRUN_REASON
    for prefix, reason in PARSE_ONLY:
        if path[: len(prefix)] == prefix:
            return reason
    if path == ("score",) and "torchvision" in argv:
        return TORCHVISION_REASON
    return None


def parse(doc: DocCommand, argv: list[str]) -> tuple[tuple[str, ...], dict]:
    """Parse argv with the real command tree; fails naming the doc line for an unknown command, flag or value.
    Returns the command path and the parsed parameters."""
    command, path = _command(argv)
    assert not hasattr(command, "commands"), f"{doc.where}: no command `t2itool {' '.join(argv[:2])}`: {doc.line}"
    try:
        context = command.make_context(" ".join(["t2itool", *path]), argv[len(path) :])
    except Exception as exc:  # click's UsageError family; formatted as the CLI would print it
        message = exc.format_message() if hasattr(exc, "format_message") else repr(exc)
        pytest.fail(f"{doc.where}: `{doc.line}` does not parse: {message}")
    return path, context.params


def check_parse_only(doc: DocCommand, path: tuple[str, ...], params: dict) -> None:
    """What a parse-only command's values must satisfy before it would start work: presets that exist."""
    from t2itool.models.registry import get_model

    if path == ("pretrain-damsm",):  # the preset and ranges resolve as the command would resolve them
        from t2itool.encoders.pretrain import PretrainConfig

        PretrainConfig(
            data=str(params["data"]), out=str(params["out_dir"]), preset=params["preset"], epochs=params["epochs"]
        ).resolved()
    if path == ("import-weights",) and params.get("preset"):
        presets = get_model(params["model"]).train_presets
        assert params["preset"] in presets, f"{doc.where}: {params['model']} has no preset {params['preset']!r}"


METRIC_FLAGS = {"--fid": "fid", "--is": "is", "--kid": "kid", "--r-precision": "r_precision"}


def _with(argv: list[str], flag: str, value: str) -> list[str]:
    return argv if flag in argv else [*argv, flag, value]


def runnable(argv: list[str], path: tuple[str, ...]) -> list[str]:
    """The doc's command made small enough for a unit test; nothing that changes what is checked."""
    if path == ("train",):
        return argv if "--dry-run" in argv else [*argv, "--dry-run"]
    if "--device" in argv:  # no GPU here: `--device cuda` runs on the CPU
        argv = list(argv)
        argv[argv.index("--device") + 1] = "cpu"
    if path == ("sample",):
        if "--per-caption" in argv:
            argv = list(argv)
            argv[argv.index("--per-caption") + 1] = "2"
        return _with(argv, "--device", "cpu")
    if path == ("score",):  # the tiny extractor stands in for Inception, whose weights are not on this machine
        argv = [*_with(_with(argv, "--extractor", "t2itool-tiny"), "--device", "cpu"), "--json"]
        return _with(argv, "--num-images", "10") if "--generate" in argv else argv
    if path[:1] == ("prep",):
        return _with(argv, "--workers", "0")
    return argv


_executed: dict[tuple[str, ...], str] = {}  # a command already run, with only its output paths different -> where


def _same_command_key(argv: list[str], tmp: Path) -> tuple[str, ...]:
    return tuple(re.sub(r"^\d+-", "", Path(a).name) if a.startswith(str(tmp)) else a for a in argv)


@pytest.mark.parametrize("doc", COMMANDS, ids=[c.where for c in COMMANDS])
def test_doc_command(doc: DocCommand, doc_files: DocFiles, tmp_path: Path) -> None:
    argv = substitute(doc, doc_files, tmp_path)
    path, params = parse(doc, argv)
    if parse_only_reason(doc, path, argv):
        check_parse_only(doc, path, params)
        return
    argv = runnable(argv, path)
    key = _same_command_key(argv, tmp_path)
    if _executed.setdefault(key, doc.where) != doc.where:  # README and a doc repeating it: run once, both parsed
        return
    result = runner.invoke(app, argv)
    assert result.exit_code == 0, f"{doc.where}: `{doc.line}`\nran: t2itool {shlex.join(argv)}\n{result.output}"
    if path == ("train",):
        assert json.loads(result.stdout)["model"] == argv[1]
    elif path == ("sample",):
        out = Path(argv[argv.index("--out") + 1])
        assert (out / "samples.jsonl").read_text().count("\n") >= 1
    elif path == ("score",) and "--reference-only" not in argv:
        asked = {METRIC_FLAGS[a] for a in argv if a in METRIC_FLAGS}
        assert {r["metric"] for r in json.loads(result.stdout)} >= asked, f"{doc.where}: not every metric scored"


RUN_NAME = re.compile(r"\b\d{5}-([A-Za-z][\w.-]*?-\d+px-batch\d+(?:-(?:gpus|nproc)\d+)?)\b")


def test_run_folders_the_docs_cite_are_what_their_train_commands_make(doc_files: DocFiles, tmp_path: Path) -> None:
    """`sample runs/00000-dfgan-birds-...` must name the folder a documented `train` command would create."""
    from t2itool.training.config import run_name, world_size_of

    made: dict[str, str] = {}
    for doc in COMMANDS:
        if doc.launcher != "t2itool" or doc.argv[:1] != ["train"] or "..." in doc.argv or "--resume" in doc.argv:
            continue
        argv = runnable(substitute(doc, doc_files, tmp_path), ("train",))
        result = runner.invoke(app, argv)
        assert result.exit_code == 0, f"{doc.where}: {result.output}"
        config = {**json.loads(result.stdout), "data": doc.argv[doc.argv.index("--data") + 1]}  # the doc's data stem
        made.setdefault(run_name(SimpleNamespace(**config), world_size_of(config)), doc.where)
    cited = [(doc.where, name) for doc in COMMANDS for name in RUN_NAME.findall(doc.line)]
    assert len(cited) >= 5
    wrong = [f"{where}: {name}" for where, name in cited if name not in made]
    assert not wrong, f"run folders no documented train command makes: {wrong}; they make: {sorted(made)}"


def test_readme_model_table_matches_the_registry() -> None:
    """The README's model table: registered models are not `planned`, and list exactly their presets."""
    from t2itool.models.registry import get_model, list_models

    section = (ROOT / "README.md").read_text().split("\n## Models\n")[1].split("\n## ")[0]
    rows = re.findall(r"^\| `([\w-]+)` \|[^|]*\| ([^|]*) \| ([^|]*) \|$", section, re.M)
    table = {
        name: (status.strip(), {p.strip() for p in presets.split(",") if p.strip()}) for name, status, presets in rows
    }
    for name in list_models():
        assert name in table, f"README.md: model {name} missing from the models table"
        status, presets = table[name]
        assert not status.startswith("planned"), f"README.md: {name} is registered but listed as {status!r}"
        assert presets == set(get_model(name).train_presets), f"README.md: presets of {name}"
    for name, (status, _) in table.items():
        assert name in list_models() or status.startswith("planned"), f"README.md: {name} is not registered"


NOT_T2ITOOL = ("python ", "pytest ", "torchrun ")  # inline code of other programs
GLOBAL_FLAGS = {"--help"}


def _options(command) -> set[str]:
    return GLOBAL_FLAGS | {name for p in command.params for name in (*p.opts, *p.secondary_opts)}


def test_every_flag_in_inline_code_exists() -> None:
    """Prose names flags in code spans (`--backbone-weights PATH`): each is an option of some t2itool command, and of
    the command itself when the span names one (`sample --split test`, `t2itool score SAMPLES --shapes-agreement`)."""
    options: set[str] = set()
    stack = [_root()]
    while stack:
        command = stack.pop()
        options |= _options(command)
        stack.extend(getattr(command, "commands", {}).values())
    unknown = []
    for path in DOC_FILES:
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            for span in re.findall(r"`([^`]+)`", line):
                if span.startswith(NOT_T2ITOOL):
                    continue
                command, named = _command(span.split()[1:] if span.startswith("t2itool ") else span.split())
                valid = options if not named or hasattr(command, "commands") else _options(command)
                flags = re.findall(r"(?<![\w-])--[a-z][a-z0-9-]*", span)
                unknown += [f"{path.relative_to(ROOT)}:{number}: {flag}" for flag in flags if flag not in valid]
    assert not unknown, f"flags the command (or any t2itool command) does not have: {unknown}"
