"""Experiments: an idea as settings on the command line or in a file, never an edit of config.py, and the
workdir that keeps them.

    python extract_features.py --data-root data/demo --workdir work/hard --config experiments/hard_targets.py
    python task4b.py --workdir work/hard                     # the workdir's experiment: nothing to repeat
    python task4b.py --workdir work/lr --set LEARNING_RATE=0.003 --set BATCH_SIZE=16
    python compare.py work/demo work/hard                    # the settings and the code that differ, the metrics
    python experiment.py --workdir work/hard                 # the experiment a workdir holds

Every script takes `--config FILE`, an experiment file (Python that assigns some of config.py's upper-case
names, e.g. `TARGETS = 'hard'`; it may read config.py's values by their names), and `--set NAME=VALUE`
(repeatable, applied after the files). A value must have the type of config.py's default (str, int, float,
bool, list, ...); an unknown name or a wrong type stops the command in one line. The values are set on the
config module for the command and the derived values (HARD_INDEX, FRAME_SECONDS) derived again; config.py
stays the one place of defaults and is never written.

A workdir keeps its experiment in WD/experiment.json. The commands that make a workdir's contents
(extract_features.py, task4b.py) write it, and every later command on that workdir starts from it: task4b.py
--run 3, --resume, evaluate.py, infer.py, plot_results.py and compare.py need no setting repeated. Until the
workdir holds a run, a command may change its experiment; once it does, a value that differs from the
experiment is refused, naming it: another experiment needs another workdir. Evaluation settings (THRESHOLD,
MERGE_GAP, ...: evaluate.py re-scores with them) and speed-only settings may differ for one command, unsaved.

    python experiment.py --workdir WD --snapshot             # prints the folder of the snapshot

A snapshot copies the project's code, its fold lists and the workdir's experiment (as an experiment file,
settings.py) into WD/snapshots/<id>/, for jobs that start later: slurm/submit.sh's array and the children of
task4b.py --jobs run that copy, so an edit of config.py, an experiment file or the code after they were
submitted changes none of them.
"""
import argparse
import ast
import contextlib
import copy
import difflib
import hashlib
import json
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import config
import utils
from utils import DataError

EXPERIMENT_FILE = 'experiment.json'           # WD/experiment.json
SNAPSHOTS_DIR = 'snapshots'                   # WD/snapshots/<id>/
SNAPSHOT_SETTINGS = 'settings.py'             # the experiment of a snapshot, as an experiment file
SNAPSHOT_RECORD = 'snapshot.json'             # where and from which commit a snapshot was taken
DERIVED = ('HARD_INDEX', 'FRAME_SECONDS')     # config.derive() computes them

# this command's experiment: the values applied (the workdir's and the command line's), where each came from,
# and the command line's own arguments (benchmark.py passes them to its parts, compare.py applies them over each
# side's experiment)
_command = {'settings': {}, 'sources': {}, 'args': [], 'cli': {}}


# -----------------------------------------------------------------------------
# Values: checked against config.py's defaults

def setting_names():
    return sorted(name for name, value in vars(config).items() if name.isupper() and not callable(value))


def check_name(name, where):
    """A name an experiment may set, or a DataError naming the nearest known one."""
    if name in DERIVED:
        raise DataError(f'{where}: {name} is derived (from CLASSES and HARD_CLASSES, or HOP_LENGTH and '
                        f'SAMPLE_RATE); set those instead')
    if name not in setting_names():
        near = difflib.get_close_matches(name.upper(), setting_names(), n=1)
        raise DataError(f'{where}: config.py has no setting {name}' + (f'; did you mean {near[0]}?' if near else
                                                                        '; python experiment.py --list shows them'))


def _is_number(value):
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _scalar(default, value):
    """value as the type of the scalar default -> (ok, value)."""
    if isinstance(default, bool):
        return isinstance(value, bool), value
    if isinstance(default, int):
        return isinstance(value, int) and not isinstance(value, bool), value
    if isinstance(default, float):
        return _is_number(value), float(value) if _is_number(value) else value
    if isinstance(default, str):
        return isinstance(value, str), value
    if isinstance(default, Path):
        return isinstance(value, (str, Path)), Path(value) if isinstance(value, (str, Path)) else value
    return True, value


TYPE_NAMES = {bool: 'True or False', int: 'an integer', float: 'a number', str: 'a string', list: 'a list',
              tuple: 'a list', dict: 'a dict'}


def checked(name, value, where):
    """value for config.NAME with the type of config.py's value (int for float, list for tuple accepted) -> the
    value as config holds it, or a DataError naming where it came from and what was expected."""
    default = getattr(config, name)
    if isinstance(default, (list, tuple)):
        ok = isinstance(value, (list, tuple))
        kinds = {type(x) for x in default}
        if ok and len(kinds) == 1 and next(iter(kinds)) in (bool, int, float, str):
            pairs = [_scalar(default[0], x) for x in value]
            ok = all(good for good, _ in pairs)
            value = [x for _, x in pairs] if ok else value
        value = type(default)(value) if ok else value
    elif isinstance(default, dict):
        ok = isinstance(value, dict)
    else:
        ok, value = _scalar(default, value)
    if not ok:
        expected = TYPE_NAMES.get(type(default), 'a path' if isinstance(default, Path) else type(default).__name__)
        if isinstance(default, (list, tuple)) and default:
            expected += f' of {TYPE_NAMES[type(default[0])].replace("an ", "").replace("a ", "")}s'
        raise DataError(f'{where}: expected {expected}, as config.{name} = {default!r}')
    return value


def parse_set(text):
    """`NAME=VALUE` of --set -> (name, value). Strings need no quotes; other values are Python literals."""
    name, equals, raw = text.partition('=')
    name, where = name.strip(), f'--set {text}'
    if not equals or not name:
        raise DataError(f'{where}: expected NAME=VALUE, e.g. --set LEARNING_RATE=0.003')
    check_name(name, where)
    try:
        value = ast.literal_eval(raw.strip())
    except (ValueError, SyntaxError):
        value = raw.strip()
        if value.lower() in ('true', 'false'):
            value = value.lower() == 'true'
    if isinstance(getattr(config, name), (str, Path)) and not isinstance(value, str):
        value = raw.strip()                      # a string that looks like a number stays the string typed
    return name, checked(name, value, where)


def read_experiment_file(path):
    """An experiment file -> ({name: value} of the upper-case names it assigns, checked; its text)."""
    path = Path(path)
    try:
        source = path.read_text()
    except OSError as error:
        raise DataError(f'{path}: experiment file not readable ({error.strerror}); give a Python file that '
                        f'assigns config.py names, e.g. experiments/hard_targets.py') from None
    try:
        tree = ast.parse(source, filename=str(path))
    except SyntaxError as error:
        raise DataError(f'{path}, line {error.lineno}: {error.msg}') from None
    lines = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store) and node.id.isupper():
            lines.setdefault(node.id, node.lineno)
    for name, line in lines.items():
        check_name(name, f'{path}, line {line}')
    # the file sees config.py's values (copies: `HARD_CLASSES.remove(...)` must not edit config's own list)
    namespace = {name: copy.deepcopy(getattr(config, name)) for name in setting_names()}
    try:
        exec(compile(tree, str(path), 'exec'), namespace)
    except Exception as error:          # whatever the user's file raises: one line naming it
        raise DataError(f'{path}: {type(error).__name__}: {error}') from None
    return {name: checked(name, namespace[name], f'{path}, line {line}: {name} = {namespace[name]!r}')
            for name, line in lines.items()}, source


@contextlib.contextmanager
def applied(settings):
    """config's values set to `settings` inside the block (the derived ones derived again), restored after."""
    before = {name: getattr(config, name) for name in [*settings, *DERIVED]}
    try:
        for name, value in settings.items():
            setattr(config, name, value)
        config.derive()
        yield
    finally:
        for name, value in before.items():
            setattr(config, name, value)


# -----------------------------------------------------------------------------
# The experiment a workdir keeps

def free_for_a_command(name):
    """Settings a command may give other values than its workdir's experiment: they change no trained number
    (evaluation, speed, names of files and folders, the demo generator, the download)."""
    import runs                  # here: runs imports the feature extraction, which no experiment file needs
    return (name in runs.NOT_TRAINING_SETTINGS - runs.FLAG_DEFAULTS) or isinstance(getattr(config, name), Path)


def read_workdir_experiment(workdir):
    """WD/experiment.json -> {'settings', 'sources', 'files'}, or None."""
    path = Path(workdir) / EXPERIMENT_FILE
    if not path.is_file():
        return None
    try:
        saved = json.loads(path.read_text())
        settings = {}
        for name, value in saved['settings'].items():
            check_name(name, str(path))
            settings[name] = checked(name, value, f'{path}: {name}')
    except (ValueError, KeyError, TypeError, AttributeError):
        raise DataError(f'{path}: not an experiment of experiment.py; delete it to start the workdir\'s experiment '
                        f'again from this command\'s settings') from None
    return {'settings': settings, 'sources': saved.get('sources', []), 'files': saved.get('files', {})}


def has_runs(workdir):
    return any((Path(workdir) / config.RUNS_DIR).glob('run*/settings.json'))


def settle(workdir, cli, sources, files, defines):
    """The settings of a command on workdir: the workdir's experiment, the command line's values on top ->
    (settings, what to save in the workdir as its experiment or None). A value of the experiment that the
    command line changes is refused, unless the command defines experiments (extract_features.py, task4b.py)
    and the workdir holds no run yet."""
    saved = read_workdir_experiment(workdir) if workdir is not None else None
    if saved is None:
        return dict(cli), (dict(cli), sorted(set(sources.values())), files) if defines else None
    merged = {**saved['settings'], **cli}
    changed = [name for name, value in cli.items()
               if _comparable(value) != _comparable(saved['settings'].get(name, getattr(config, name)))]
    pinned = [name for name in changed if not free_for_a_command(name)]
    if pinned and (not defines or has_runs(workdir)):
        name = pinned[0]
        was = saved['settings'].get(name, getattr(config, name))
        holds = ', '.join(f'{k}={v!r}' for k, v in saved['settings'].items()) or "config.py's values"
        reason = f'it holds runs ({Path(workdir) / config.RUNS_DIR})' if has_runs(workdir) else \
            'only extract_features.py and task4b.py may change it, before its first run'
        raise DataError(f'{Path(workdir) / EXPERIMENT_FILE}: this workdir\'s experiment is {holds}, and '
                        f'{reason}; {sources[name]} gives {name} = {cli[name]!r}, the experiment {was!r}: '
                        f'give another --workdir for another experiment')
    if defines and pinned:
        return merged, (merged, saved['sources'] + [sources[n] for n in pinned], {**saved['files'], **files})
    return merged, None


def _comparable(value):
    return json.loads(json.dumps(value, default=str))           # as experiment.json reads back: tuples are lists


def write_workdir_experiment(workdir, settings, sources, files):
    utils.write_json_atomic(Path(workdir) / EXPERIMENT_FILE, {
        'settings': json.loads(json.dumps(settings, default=str)), 'sources': list(dict.fromkeys(sources)),
        'files': files})


def split_argv(argv):
    """A script's arguments -> (--config files, --set texts, the other arguments, the value of --workdir or
    None). --config and --set are taken out; --workdir stays for the script."""
    files, sets, rest, workdir = [], [], [], None
    argv = list(argv)
    i = 0
    while i < len(argv):
        arg = argv[i]
        if arg == '--':
            rest += argv[i:]
            break
        name, equals, value = arg.partition('=')
        if name in ('--config', '--set', '--workdir'):
            if not equals:
                if i + 1 >= len(argv):
                    raise DataError(f'{name}: expected a value after it')
                value = argv[i + 1]
                i += 1
            if name == '--config':
                files.append(value)
            elif name == '--set':
                sets.append(value)
            else:
                workdir = value
                rest += ['--workdir', value]
        else:
            rest.append(arg)
        i += 1
    return files, sets, rest, workdir


@contextlib.contextmanager
def for_command(argv, workdir_role=None):
    """A script's arguments -> the arguments left for its parser, inside the block where config holds the
    command's experiment: the workdir's (workdir_role 'uses' or 'defines') with --config files and --set values
    on top. 'defines' saves the experiment in the workdir (see the module's docstring)."""
    files, sets, rest, workdir = split_argv(argv)
    cli, sources, texts = {}, {}, {}
    for path in files:
        values, texts[str(path)] = read_experiment_file(path)
        cli.update(values)
        sources.update({name: f'--config {path}' for name in values})
    for text in sets:
        name, value = parse_set(text)
        cli[name] = value
        sources[name] = f'--set {text}'
    with applied(cli):                    # the command line may move the workdir itself (--set WORKDIR=...)
        workdir = Path(workdir or config.WORKDIR) if workdir_role else None
    settings, to_save = settle(workdir, cli, sources, texts, workdir_role == 'defines')
    where = {name: str(Path(workdir) / EXPERIMENT_FILE) for name in settings} if workdir is not None else {}
    where.update(sources)
    previous = dict(_command)
    _command.update(settings=settings, sources=where, cli=cli,
                    args=[a for p in files for a in ('--config', str(p))] + [a for s in sets for a in ('--set', s)])
    try:
        with applied(settings):
            utils.check_config()             # before anything is saved: a value no script can work with
            # saved before the command when the workdir exists (a killed training keeps it), else once the command
            # has made the workdir (extraction into a new one); never into a folder the command did not make
            if to_save and workdir.is_dir():
                write_workdir_experiment(workdir, *to_save)
                to_save = None
            yield rest
            if to_save and workdir.is_dir():
                write_workdir_experiment(workdir, *to_save)
    finally:
        _command.clear()
        _command.update(previous)


def current():
    """This command's experiment: {'settings': the values it overrides, 'sources': where each came from}."""
    return {'settings': json.loads(json.dumps(_command['settings'], default=str)),
            'sources': sorted(set(_command['sources'].values()))}


def source_of(name):
    """Where config.NAME's value of this command came from, for messages: 'config.py', '--set ...', a file."""
    return _command['sources'].get(name, 'config.py')


def command_args():
    """This command's own --config and --set arguments, for the child processes that must see them."""
    return list(_command['args'])


@contextlib.contextmanager
def of_workdir(workdir):
    """config with workdir's experiment and this command's --config/--set on top, inside the block (compare.py:
    each side is scored with its own)."""
    saved = read_workdir_experiment(workdir)
    with applied({**(saved['settings'] if saved else {}), **_command['cli']}):
        yield


# -----------------------------------------------------------------------------
# Snapshots: what later jobs run

def _snapshot_files(root):
    """(path relative to root) of what a snapshot copies: the scripts, and the split and fold lists that config
    names when they are the repository's (others stay where they are, named by their absolute paths)."""
    root = Path(root).resolve()
    paths = [*root.glob('*.py'), Path(config.DEVELOPMENT_SPLIT), *Path(config.FOLDS_DIR).glob('*.csv')]
    return sorted({p.resolve().relative_to(root) for p in paths if p.resolve().is_relative_to(root)})


def settings_source(settings):
    """An experiment file that sets `settings` (what a snapshot's jobs read with --config)."""
    lines = ['"""The experiment of a snapshot: the values it gives config.py\'s settings (experiment.py)."""']
    lines += [f'{name} = {str(value)!r}' if isinstance(value, Path) else f'{name} = {value!r}'
              for name, value in sorted(settings.items())]
    return '\n'.join(lines) + '\n'


def git_state(root):
    """(commit, whether tracked files differ from it) of the repository at root, or (None, None)."""
    def git(*args):
        return subprocess.run(['git', *args], cwd=root, capture_output=True, text=True, timeout=10)
    try:
        commit = git('rev-parse', 'HEAD').stdout.strip() or None
        dirty = bool(git('status', '--porcelain', '--untracked-files=no').stdout.strip()) if commit else None
    except (OSError, subprocess.SubprocessError):
        return None, None
    return commit, dirty


def source_state():
    """(commit, dirty) of the code running: a snapshot's record of its repository, else git's answer."""
    record = Path(config.REPO_ROOT) / SNAPSHOT_RECORD
    if record.is_file():
        state = json.loads(record.read_text())
        return state.get('git_commit'), state.get('git_dirty')
    return git_state(config.REPO_ROOT)


def snapshot(workdir):
    """The code of this checkout, its fold lists and this command's experiment, copied once into
    WD/snapshots/<id>/ (id: a hash of all of it) -> that folder. Jobs run `python <folder>/task4b.py --config
    <folder>/settings.py ...`."""
    root = Path(config.REPO_ROOT).resolve()
    settings = settings_source(_command['settings'])
    digest = hashlib.sha256(settings.encode())
    files = _snapshot_files(root)
    for relative in files:
        digest.update(str(relative).encode() + b'\0' + (root / relative).read_bytes())
    target = Path(workdir) / SNAPSHOTS_DIR / digest.hexdigest()[:12]
    if target.is_dir():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix='.tmp-'))
    try:
        for relative in files:
            (tmp / relative).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(root / relative, tmp / relative)
        (tmp / SNAPSHOT_SETTINGS).write_text(settings)
        commit, dirty = source_state()
        utils.write_json_atomic(tmp / SNAPSHOT_RECORD, {'repository': str(root.resolve()), 'git_commit': commit,
                                                        'git_dirty': dirty, 'experiment': current()})
        os.replace(tmp, target)
    except OSError:
        if not target.is_dir():              # not another process's snapshot of the same id, renamed first
            raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


@utils.command(workdir='defines')
def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    parser.add_argument('--workdir', type=Path, default=config.WORKDIR, help='the workdir (default: %(default)s)')
    parser.add_argument('--snapshot', action='store_true',
                        help='copy the code and the experiment into WORKDIR/snapshots/<id>/ and print its path')
    parser.add_argument('--list', action='store_true', help="config.py's settings and their values for this command")
    add_options(parser)
    args = parser.parse_args(argv)
    if args.snapshot:
        print(snapshot(args.workdir))
    elif args.list:
        for name in setting_names():
            print(f'{name} = {getattr(config, name)!r}  ({source_of(name)})')
    else:
        experiment = current()
        print(f'{args.workdir}: ' + (', '.join(f'{k}={v!r}' for k, v in experiment['settings'].items())
                                     or "config.py's values") + (f" (from {'; '.join(experiment['sources'])})"
                                                                 if experiment['sources'] else ''))
    return 0


class _TakenBefore(argparse.Action):
    """utils.command takes --config and --set out before the script's parser runs: one left here was abbreviated."""

    def __call__(self, parser, namespace, values, option_string=None):
        parser.error(f'{self.option_strings[0]}: write it in full (an abbreviation of it is not applied)')


def add_options(parser):
    """--config and --set in a script's --help (utils.command applies them before the script's parser runs)."""
    group = parser.add_argument_group('experiment (experiment.py)')
    group.add_argument('--config', metavar='FILE', action=_TakenBefore,
                       help="an experiment file: Python assigning some of config.py's names, e.g. "
                            "experiments/hard_targets.py (repeatable; default: the workdir's experiment)")
    group.add_argument('--set', metavar='NAME=VALUE', action=_TakenBefore,
                       help="one of config.py's settings, e.g. --set LEARNING_RATE=0.003 (repeatable, after the "
                            'files)')


if __name__ == '__main__':
    import experiment       # one module: utils.command applies the experiment in `experiment`, not in `__main__`
    raise SystemExit(experiment.main())
