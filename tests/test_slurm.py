"""The SLURM job scripts (slurm/), submitted for real to a one-node SLURM that the tests start on this machine.

Needs munged, slurmctld, slurmd and the SLURM client commands (Debian: apt-get install slurm-wlm munge); without
them, or where the daemons do not come up, the tests are skipped with the reason. The cluster lives in a
temporary folder (own munge key and socket, own slurm.conf and ports) and is stopped at the end of the module.
"""
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from helpers import SMALL

REPO = Path(__file__).resolve().parent.parent
SCALE = '0.03'              # the smallest demo set where folds 1 and 2 keep a training and a validation sequence
RUNS, FOLDS, EPOCHS = 2, ['1', '2'], '2'
SBATCH_OPTIONS = ['--cpus-per-task=1', '--mem=2G', '--time=10']   # 1 thread a task, as the sequential reference
TERMINAL = {'COMPLETED', 'FAILED', 'CANCELLED', 'TIMEOUT', 'OUT_OF_MEMORY', 'NODE_FAIL', 'BOOT_FAIL', 'DEADLINE',
            'PREEMPTED'}
TIMEOUT_S = 300

pytestmark = pytest.mark.slow


def which(name):
    return shutil.which(name, path=os.pathsep.join([os.environ.get('PATH', ''), '/usr/sbin', '/usr/local/sbin', '/sbin']))


def free_port():
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


def tail(path, lines=15):
    path = Path(path)
    return '\n'.join(path.read_text(errors='replace').splitlines()[-lines:]) if path.is_file() else f'({path} absent)'


class Cluster:
    def __init__(self, root):
        self.root = root
        self.env = None
        self.daemons = []

    def run(self, *command, check=True):
        done = subprocess.run([str(c) for c in command], env=self.env, capture_output=True, text=True)
        if check and done.returncode:
            raise AssertionError(f'{command}: exit status {done.returncode}\n{done.stdout}\n{done.stderr}')
        return done

    def start(self, name, command):
        log = open(self.root / f'{name}.out', 'w')
        self.daemons.append((name, subprocess.Popen([str(c) for c in command], env=self.env, stdout=log,
                                                    stderr=subprocess.STDOUT)))

    def died(self):
        return [name for name, proc in self.daemons if proc.poll() is not None]

    def logs(self):
        return '\n'.join(f'--- {name}\n{tail(self.root / name)}' for name in
                         ('munged.out', 'munged.log', 'slurmctld.out', 'slurmctld.log', 'slurmd.out', 'slurmd.log'))

    def stop(self):
        if self.env is not None and not self.died():
            self.run('scancel', '--user', str(os.getuid()), check=False)
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline and self.run('squeue', '-h', check=False).stdout.strip():
                time.sleep(0.5)
        for name, proc in reversed(self.daemons):      # slurmd, slurmctld, then munged
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(15)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()

    def job(self, job_id):
        """scontrol's records of a job: one dict per array task (or one for a plain job), fields by name."""
        out = self.run('scontrol', '-o', 'show', 'job', job_id).stdout
        return [dict(field.split('=', 1) for field in line.split() if '=' in field) for line in out.splitlines()]

    def wait(self, job_id):
        """Wait until every task of the job has ended -> its records."""
        deadline = time.monotonic() + TIMEOUT_S
        while True:
            records = self.job(job_id)
            if all(r['JobState'] in TERMINAL for r in records):
                return records
            if time.monotonic() > deadline or self.died():
                raise AssertionError(f'job {job_id} not ended after {TIMEOUT_S} s: {records}\n{self.logs()}')
            time.sleep(1)


def slurm_conf(root, munge_socket, node_line, node_name):
    return f"""\
ClusterName=pytest
SlurmctldHost={node_name}(127.0.0.1)
SlurmctldPort={free_port()}
SlurmdPort={free_port()}
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket={munge_socket}
SlurmUser=root
SlurmdUser=root
StateSaveLocation={root}/state
SlurmdSpoolDir={root}/spool
SlurmctldPidFile={root}/slurmctld.pid
SlurmdPidFile={root}/slurmd.pid
SlurmctldLogFile={root}/slurmctld.log
SlurmdLogFile={root}/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
MpiDefault=none
MailProg=/bin/true
ReturnToService=2
{node_line} NodeAddr=127.0.0.1 State=UNKNOWN
PartitionName=debug Nodes={node_name} Default=YES MaxTime=INFINITE State=UP
"""


@pytest.fixture(scope='module')
def slurm(tmp_path_factory):
    """A one-node SLURM on this machine, its daemons stopped at the end of the module (also after a failure)."""
    commands = ['munged', 'slurmctld', 'slurmd', 'sbatch', 'squeue', 'scontrol', 'scancel', 'sinfo']
    missing = [c for c in commands if which(c) is None]
    if missing:
        pytest.skip(f'SLURM not installed (no {", ".join(missing)}); Debian: apt-get install slurm-wlm munge')
    if os.getuid() != 0:
        pytest.skip('slurmd must run as root to start jobs; run the tests as root for the SLURM tests')
    root = tmp_path_factory.mktemp('slurm')
    (root / 'state').mkdir()
    (root / 'spool').mkdir()
    key = root / 'munge.key'
    key.write_bytes(os.urandom(1024))
    key.chmod(0o600)
    munge_socket = root / 'munge.sock'
    node = subprocess.run([which('slurmd'), '-C'], capture_output=True, text=True).stdout
    node_line = next((line for line in node.splitlines() if line.startswith('NodeName=')), None)
    if node_line is None:
        pytest.skip(f'slurmd -C did not describe this machine: {node!r}')
    node_name = node_line.split()[0].split('=', 1)[1]
    (root / 'slurm.conf').write_text(slurm_conf(root, munge_socket, node_line, node_name))

    # the jobs run `python`: this interpreter (and its venv); no SLURM or sbatch setting of an enclosing job
    bin_dir = root / 'bin'
    bin_dir.mkdir()
    (bin_dir / 'python').write_text(f'#!/bin/sh\nexec {sys.executable} "$@"\n')
    (bin_dir / 'python').chmod(0o755)
    env = {k: v for k, v in os.environ.items() if not k.startswith(('SLURM_', 'SBATCH_', 'SALLOC_', 'SRUN_'))}
    env.update(SLURM_CONF=str(root / 'slurm.conf'), CUDA_VISIBLE_DEVICES='',
               PATH=os.pathsep.join([str(bin_dir), env.get('PATH', ''), '/usr/sbin', '/sbin']))

    cluster = Cluster(root)
    cluster.env = env
    try:
        # --force: the socket folder is the private temporary folder, not the world-readable one munged wants
        cluster.start('munged', [which('munged'), '--foreground', '--force', f'--socket={munge_socket}',
                                 f'--key-file={key}', f'--pid-file={root}/munged.pid', f'--log-file={root}/munged.log',
                                 f'--seed-file={root}/munged.seed'])
        deadline = time.monotonic() + 15
        while not munge_socket.exists() and not cluster.died() and time.monotonic() < deadline:
            time.sleep(0.2)
        if not munge_socket.exists():
            pytest.skip(f'munged did not start:\n{cluster.logs()}')
        cluster.start('slurmctld', [which('slurmctld'), '-D', '-i'])
        cluster.start('slurmd', [which('slurmd'), '-D'])
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not cluster.died():
            states = cluster.run('sinfo', '-h', '-N', '-o', '%T', check=False).stdout.split()
            if states == ['idle']:
                break
            time.sleep(0.5)
        else:
            pytest.skip(f'the SLURM daemons did not start (exited: {cluster.died()}):\n{cluster.logs()}')
        yield cluster
    finally:
        cluster.stop()


def cli(*args, **env):
    subprocess.run([sys.executable, *map(str, args)], cwd=REPO, check=True, capture_output=True,
                   env={**os.environ, 'CUDA_VISIBLE_DEVICES': '', **env})


@pytest.fixture(scope='module')
def extracted(tmp_path_factory):
    """Demo data at SCALE, extracted: features/ and metadata/ to copy into each workdir."""
    root = tmp_path_factory.mktemp('slurm-demo')
    cli('demo_data.py', '--out', root / 'data', '--scale', SCALE)
    cli('extract_features.py', '--data-root', root / 'data', '--workdir', root / 'workdir')
    return root / 'workdir'


def new_workdir(extracted, path):
    for name in ('features', 'metadata'):
        shutil.copytree(extracted / name, path / name)
    return path


@pytest.fixture(scope='module')
def sequential(slurm, extracted, tmp_path_factory):
    """The reference: the same runs trained one after the other in one process, one math thread, then gathered."""
    workdir = new_workdir(extracted, tmp_path_factory.mktemp('sequential'))
    cli('task4b.py', '--workdir', workdir, '--runs', RUNS, '--folds', *FOLDS, '--epochs', EPOCHS, *SMALL,
        OMP_NUM_THREADS='1')
    cli('evaluate.py', '--workdir', workdir)
    return workdir


def submit(slurm, workdir, *options, repo=REPO, sbatch_options=()):
    out = slurm.run(repo / 'slurm' / 'submit.sh', '--workdir', workdir, '--runs', RUNS, '--folds', ' '.join(FOLDS),
                    '--epochs', EPOCHS, *SMALL, *options, '--', *SBATCH_OPTIONS, *sbatch_options).stdout
    found = re.search(r'job array (\d+) .*gather: job (\d+)', out)
    assert found, out
    return found.group(1), found.group(2)


def task_states(records):
    return {int(r['ArrayTaskId']): r['JobState'] for r in records}


def score_files(workdir):
    runs = workdir / 'runs'
    return {p.relative_to(runs).as_posix(): p.read_bytes() for p in sorted(runs.glob('run*/scores/*.tsv'))}


def gathered(workdir):
    """results.json and results.md, with the workdir's own path (in runs[i].scores_dir) made neutral, without what
    the trainings cost (their times and energy are measurements: cost.py)."""
    results = json.loads((workdir / 'results.json').read_text().replace(str(workdir), '<workdir>'))
    results.pop('cost')
    for run in results['runs']:
        run.pop('cost')
    table = (workdir / 'results.md').read_text().replace(str(workdir), '<workdir>')
    return [results, '\n'.join(line for line in table.splitlines() if not line.startswith('- '))]


def assert_same_table(workdir, reference):
    expected = score_files(reference)
    assert {name.split('/')[0] for name in expected} == {f'run{r}' for r in range(RUNS)}
    assert score_files(workdir) == expected                            # byte for byte
    assert gathered(workdir) == gathered(reference)
    assert gathered(workdir)[0]['n_runs'] == RUNS
    spent = json.loads((workdir / 'results.json').read_text())['cost']      # every job's, gathered
    assert spent['training']['folds'] == spent['test']['folds'] == RUNS * len(FOLDS)


def test_the_job_array_and_its_gather_give_the_table_of_a_sequential_run(slurm, sequential, extracted, tmp_path):
    workdir = new_workdir(extracted, tmp_path)
    array, gather = submit(slurm, workdir)
    assert slurm.wait(gather)[0]['JobState'] == 'COMPLETED', slurm.logs()
    assert task_states(slurm.wait(array)) == {i: 'COMPLETED' for i in range(RUNS * len(FOLDS))}
    assert slurm.run(REPO / 'slurm' / 'failed.sh', array).stdout.strip() == ''
    assert_same_table(workdir, sequential)
    logs = workdir / 'slurm-logs'
    assert (logs / f'table-{array}_3.out').read_text().startswith('array task 3: run 1, fold 2,')
    assert 'wrote' in (logs / f'gather-{gather}.out').read_text()


def test_a_failed_training_cancels_the_gather_and_rerunning_it_alone_completes_the_table(slurm, sequential, extracted,
                                                                                        tmp_path):
    workdir = new_workdir(extracted, tmp_path / 'workdir')
    fold2 = workdir / 'features' / 'fold2.npz'
    fold2.rename(tmp_path / 'fold2.npz')                 # fold 2 cannot train: its arrays are missing
    array, gather = submit(slurm, workdir)
    assert task_states(slurm.wait(array)) == {0: 'COMPLETED', 1: 'FAILED', 2: 'COMPLETED', 3: 'FAILED'}
    record = slurm.wait(gather)[0]
    assert (record['JobState'], record['Reason']) == ('CANCELLED', 'DependencyNeverSatisfied')
    # it never started: no node, no log (RunTime is no witness: SLURM may count it from time 0 for such a job)
    assert record['NodeList'] in ('', '(null)')
    assert not (workdir / 'slurm-logs' / f'gather-{gather}.out').exists()
    assert not (workdir / 'results.json').exists()          # the trainings alone write nothing of the table
    failed = slurm.run(REPO / 'slurm' / 'failed.sh', array).stdout.strip()
    assert failed == '1,3'

    finished = {p: p.stat().st_mtime_ns for p in workdir.glob('runs/run*/fold1/*')}
    assert finished
    (tmp_path / 'fold2.npz').rename(fold2)
    array, gather = submit(slurm, workdir, '--tasks', failed)
    assert slurm.wait(gather)[0]['JobState'] == 'COMPLETED', slurm.logs()
    assert task_states(slurm.wait(array)) == {1: 'COMPLETED', 3: 'COMPLETED'}
    assert {p: p.stat().st_mtime_ns for p in workdir.glob('runs/run*/fold1/*')} == finished   # not trained again
    assert_same_table(workdir, sequential)


def test_edits_after_submission_change_no_queued_task(slurm, sequential, extracted, tmp_path):
    """config.py and model.py edited while the array waits (held): the tasks run the code and settings submitted."""
    repo = tmp_path / 'repo'                     # a checkout of this repository, to edit
    shutil.copytree(REPO, repo, ignore=shutil.ignore_patterns('.git', '.venv', 'tests', 'data', 'work', '__pycache__',
                                                              '*.pt', 'runs', 'features'))
    workdir = new_workdir(extracted, tmp_path / 'workdir')
    array, gather = submit(slurm, workdir, repo=repo, sbatch_options=['--hold'])
    assert {r['JobState'] for r in slurm.job(array)} == {'PENDING'}
    config_py, model_py = repo / 'config.py', repo / 'model.py'
    config_py.write_text(config_py.read_text().replace('LEARNING_RATE: above(0) = 1e-3',
                                                       'LEARNING_RATE: above(0) = 1e-2'))
    model_py.write_text(model_py.read_text().replace('return self.dense2(x)', 'return self.dense2(2 * x)'))
    assert 'LEARNING_RATE: above(0) = 1e-2' in config_py.read_text() and '2 * x' in model_py.read_text()
    slurm.run('scontrol', 'release', array)
    assert slurm.wait(gather)[0]['JobState'] == 'COMPLETED', slurm.logs()
    assert_same_table(workdir, sequential)
    assert (workdir / 'runs' / 'run0' / 'code' / 'model.py').read_text() == (REPO / 'model.py').read_text()
