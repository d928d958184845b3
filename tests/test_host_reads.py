"""No device synchronisation between the forward pass and the end of the backward pass: the tensor-to-Python
reads a step makes there are counted on the CPU (each would stall a GPU step), for the quickstart and a2."""

import pytest

from rsb_composer.recipe import load_recipe
from rsb_composer.tools.host_reads import HostReadWindow, counting_host_reads
from rsb_composer.trainer import build_trainer
from tests.helpers import REPO, TINY_TOY

STEPS = 4


@pytest.mark.parametrize("recipe", ["quickstart", "a2"])
def test_at_most_one_read_in_ten_steps_between_forward_and_backward(recipe, toy_dir, tmp_path):
    overrides = ["data.source=toy", f"data.path={toy_dir}", f"data.toy={TINY_TOY}", "data.train_resolution=32",
                 "data.eval_resolution=32", "data.global_batch_size=null", "data.batch_size=8", "data.num_workers=0",
                 f"max_duration={STEPS}ba",
                 f"run_dir={tmp_path / 'run'}", "progress_bar=false", "checkpoints.save_interval=100ba",
                 "checkpoints.keep_top_k=0"]
    trainer = build_trainer(load_recipe(REPO / "yamls" / f"{recipe}.yaml", overrides))
    window = HostReadWindow()
    trainer.state.callbacks.append(window)
    with counting_host_reads(window):
        trainer.fit()
    trainer.close()
    assert window.steps == STEPS
    assert window.per_step <= 0.1, dict(window.reads)


def test_the_count_sees_reads_in_the_window_and_not_of_host_attributes():
    import torch

    window = HostReadWindow()
    device_tensor, host_attribute = torch.tensor([2.0]), torch.tensor(0.05)
    window._host_tensors.add(id(host_attribute))
    with counting_host_reads(window):
        float(device_tensor)  # outside the window
        window.before_forward(None, None)
        assert device_tensor.item() == 2.0 and bool(device_tensor) and bool(host_attribute)
        float(host_attribute)
        window.after_backward(None, None)
    assert dict(window.reads) == {"item": 1, "__bool__": 1} and window.steps == 1


def test_sync_warnings_are_counted_per_step_and_in_the_window_after_the_warmup():
    """What bench-syncs does with torch.cuda.set_sync_debug_mode("warn")'s warnings (mocked: no GPU here)."""
    import warnings
    from types import SimpleNamespace

    from rsb_composer.tools.bench_syncs import SYNC_WARNING, SyncWindows

    log = []
    windows = SyncWindows(log, warmup=1, cuda=False)

    def sync(line):
        log.append(warnings.WarningMessage(f"{SYNC_WARNING} item", UserWarning, "trainer.py", line))

    for batch in range(3):
        state = SimpleNamespace(timestamp=SimpleNamespace(batch=batch))
        windows.before_dataloader(state, None)
        sync(3636)  # Composer's iter_finished.item(), before the forward pass
        windows.before_forward(state, None)
        if batch == 2:
            sync(99)  # one read between forward and backward, in the last step
        windows.after_backward(state, None)
        sync(2468)  # the loss .item() for logging
        windows.batch_end(state, None)
    assert windows.steps == 2 and windows.in_step == 5 and windows.in_window == 1  # step 0 was the warm-up
    assert windows.sites == {"trainer.py:3636": 2, "trainer.py:2468": 2, "trainer.py:99": 1}
