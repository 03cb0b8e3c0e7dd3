"""A tiny HiLo search space (a 7x7 token grid, a few knobs, millisecond trials) shared by the search tests."""

from __future__ import annotations

from pathlib import Path

import optuna

from effscope.search.space import parse_space
from effscope.search.storage import storage_url

TINY = """
[space]
target = "hilo"
[workload]
size = [7, 7]
threads = 1
[objectives]
quality = "params"
[budgets]
latency_ms = [{budget}, 0.001]
[search]
trials = {trials}
seed = 9
[measure]
max_time_s = {max_time}
window_s = 0.05
[knobs]
heads = [1, 2]
head_dim = 16
lofi_heads = {{ low = 0, high = 2 }}
window_size = [2, 7]
mlp_ratio = [1.0, 2.0]
"""


# A LITv2 space of a few tiny designs for calibration (short training on a few images).
SMALL_LITV2 = """
[space]
target = "litv2_s"
[workload]
size = [32, 32]
threads = 1
[objectives]
quality = "synflow"
[budgets]
latency_ms = 100
[train]
steps = 2
batch = 4
val_images = 4
[knobs]
embed_dim = [16, 24]
depths = [1, 1, 1, 1]
num_heads = [1, 1, 2, 2]
lofi_heads = [0, 1]
window_size = [1, 2]
"""  # 6 designs: 8 knob combinations, lofi_heads being ignored at window_size 1


def tiny(tmp_path: Path, *, budget: float = 100.0, trials: int = 6, max_time: float = 0.05, name: str = "tiny"):
    path = tmp_path / f"{name}.toml"
    path.write_text(TINY.format(budget=budget, trials=trials, max_time=max_time))
    return path


def load(path: Path):
    return parse_space(path.read_text(), name=path.stem, path=str(path))


def trials_of(db: str, study: str = "tiny-cpu"):
    url = storage_url(db)
    return optuna.load_study(study_name=study, storage=url).get_trials(deepcopy=False)
