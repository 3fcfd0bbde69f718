"""Precision per device, decided by compute capability, tested by simulating the card.

torch answers `is_bf16_supported() == True` on a T4 because bf16 can be emulated there; each
simulated card below says so too, as the real ones do, so only the compute capability can tell
a T4 (fp16 tensor cores only) from an Ampere card.
"""

import warnings

import pytest
import torch

from pricer.base.precision import default_precision, emulated_bf16_warning, resolve_dtype

CARDS = {
    "Tesla V100": ((7, 0), "16-mixed", torch.float16),
    "Tesla T4": ((7, 5), "16-mixed", torch.float16),
    "NVIDIA A100": ((8, 0), "bf16-mixed", torch.bfloat16),
    "NVIDIA A10G": ((8, 6), "bf16-mixed", torch.bfloat16),
    "NVIDIA L4": ((8, 9), "bf16-mixed", torch.bfloat16),
    "NVIDIA H100": ((9, 0), "bf16-mixed", torch.bfloat16),
}


@pytest.fixture
def card(monkeypatch):
    """Make torch report a CUDA card of the given name and compute capability."""
    import bitsandbytes  # noqa: F401  (imported on the real CPU, before CUDA is simulated)
    import peft  # noqa: F401

    def simulate(name: str) -> None:
        capability = CARDS[name][0]
        monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
        monkeypatch.setattr(torch.cuda, "is_initialized", lambda: True)
        monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
        monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: capability)
        monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: name)
        monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: True)

    return simulate


@pytest.mark.parametrize("name", CARDS)
def test_training_precision_and_compute_dtype_follow_the_compute_capability(card, name):
    card(name)
    _, precision, dtype = CARDS[name]
    assert default_precision("auto") == precision
    assert default_precision("gpu") == precision
    assert resolve_dtype("auto", torch.device("cuda", 0)) == dtype
    assert resolve_dtype("auto", torch.device("cuda")) == dtype


def test_the_cpu_is_fp32_and_named_dtypes_are_kept(card):
    assert default_precision("cpu") == "32-true"
    assert resolve_dtype("auto", torch.device("cpu")) == torch.float32
    card("Tesla T4")
    assert default_precision("cpu") == "32-true"  # a GPU machine told to train on its CPU
    assert resolve_dtype("bfloat16", torch.device("cuda", 0)) == torch.bfloat16


def test_bf16_forced_on_a_t4_is_warned_about_and_not_on_an_a100(card):
    card("Tesla T4")
    warning = emulated_bf16_warning("bf16-mixed", "auto")
    assert "Tesla T4" in warning and "7.5" in warning and "16-mixed" in warning
    assert emulated_bf16_warning("16-mixed", "auto") is None
    card("NVIDIA A100")
    assert emulated_bf16_warning("bf16-mixed", "auto") is None


@pytest.fixture
def cpu(monkeypatch):
    """Make torch report a CPU with native bf16 (AVX512-BF16) or without it (AVX2 only)."""

    def simulate(native: bool) -> None:
        monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: native)
        monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: False)
        monkeypatch.setattr(torch.cpu, "_is_amx_fp16_supported", lambda: False)
        monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda: "AVX512" if native else "AVX2")

    return simulate


def test_bf16_asked_of_a_cpu_that_emulates_it_is_warned_about(cpu, card):
    """On a CPU without AVX512-BF16 or AMX, bf16 matmuls are emulated two orders of magnitude
    slower (RESULTS.md): the warning names the CPU and the fix; a CPU with native bf16 gets none,
    and 32-true never does. A GPU machine training on its CPU is asked about its CPU."""
    cpu(native=False)
    for accelerator in ("cpu", "auto"):
        warning = emulated_bf16_warning("bf16-mixed", accelerator)
        assert "this CPU (AVX2, without AVX512-BF16 or AMX)" in warning
        assert "--trainer.precision 32-true" in warning
    assert emulated_bf16_warning("32-true", "cpu") is None
    cpu(native=True)
    assert emulated_bf16_warning("bf16-mixed", "cpu") is None
    card("NVIDIA A100")
    cpu(native=False)
    assert "this CPU (AVX2" in emulated_bf16_warning("bf16-true", "cpu")
    assert emulated_bf16_warning("bf16-mixed", "auto") is None  # the A100 trains it natively


def test_serving_a_bf16_adapter_on_such_a_cpu_warns_that_it_is_emulated(cpu, tiny_llama):
    """A Space on a CPU without native bf16 would read a bf16-tested adapter a hundred times
    slower: Pricer says so, and what reads at full speed; a CPU with native bf16 reads quietly."""
    from pricer.read.recipe import Recipe
    from pricer.read.serving import Pricer

    cpu(native=False)
    with pytest.warns(UserWarning, match=r"this CPU \(AVX2, without AVX512-BF16 or AMX\) emulates bf16"):
        Pricer(
            Recipe(base_model=tiny_llama, quantization={"weights": "none"}, precision="bf16-mixed"),
            None,
            device="cpu",
        )
    cpu(native=True)
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        Pricer(
            Recipe(base_model=tiny_llama, quantization={"weights": "none"}, precision="bf16-mixed"),
            None,
            device="cpu",
        )
        cpu(native=False)
        Pricer(
            Recipe(base_model=tiny_llama, quantization={"weights": "none"}, precision="32-true"),
            None,
            device="cpu",
        )


def test_a_t4_adapter_read_on_a_cpu_is_read_as_lightning_tests_it_there(cpu, tiny_llama):
    """fp16 autocast is a GPU's: on a CPU Lightning's Trainer turns 16-mixed into bf16-mixed for
    `test`, and the Space's Pricer reads the same way, so the two agree on one machine."""
    from pricer.base.precision import on_the_device
    from pricer.read.recipe import Recipe
    from pricer.read.serving import Pricer

    assert on_the_device("16-mixed", "cpu") == "bf16-mixed"
    assert on_the_device("16-mixed", "cuda") == "16-mixed" and on_the_device("32-true", "cpu") == "32-true"
    cpu(native=True)
    pricer = Pricer(
        Recipe(base_model=tiny_llama, quantization={"weights": "none"}, precision="16-mixed"),
        None,
        device="cpu",
    )
    assert pricer.reader.autocast == torch.bfloat16


class LoadRecorder:
    """Stands in for `from_pretrained` on a card that is not there: records what the model
    would be loaded with, then loads the tiny model on the CPU in full precision."""

    def __init__(self, original):
        self.original = original
        self.kwargs: dict = {}

    def __call__(self, source, **kwargs):
        self.kwargs = kwargs
        return self.original(source, dtype=torch.float32)


@pytest.mark.parametrize("name", ["Tesla T4", "NVIDIA L4"])
@pytest.mark.parametrize("quantization", ["4bit", "none"])
def test_training_and_serving_load_the_base_in_the_cards_dtype(
    card, monkeypatch, tiny_llama, name, quantization
):
    from transformers import AutoModelForCausalLM

    from pricer.read.recipe import Recipe
    from pricer.read.serving import Pricer
    from pricer.train.model import PriceModel

    recorder = LoadRecorder(AutoModelForCausalLM.from_pretrained)
    monkeypatch.setattr(AutoModelForCausalLM, "from_pretrained", recorder)
    card(name)
    expected = CARDS[name][2]

    monkeypatch.setattr(PriceModel, "target_device", property(lambda self: torch.device("cuda", 0)))
    PriceModel(base_model=tiny_llama, quantization={"weights": quantization}).configure_model()
    trained = dict(recorder.kwargs)

    Pricer(Recipe(base_model=tiny_llama, quantization={"weights": quantization}), None, device="cuda")
    served = dict(recorder.kwargs)

    for kwargs in (trained, served):
        assert kwargs["dtype"] == expected
        if quantization == "4bit":
            assert kwargs["quantization_config"].bnb_4bit_compute_dtype == expected
        else:
            assert kwargs.get("quantization_config") is None


def test_the_card_is_asked_without_initialising_cuda_in_this_process(card, monkeypatch):
    """The CLI decides the precision before Lightning starts its processes: asking torch here
    would initialise CUDA, and `ddp_fork`/`ddp_notebook` (Kaggle's 2 x T4) then fail with
    "Cannot re-initialize CUDA in forked subprocess". A child process answers instead."""
    import pricer.base.precision

    card("Tesla T4")
    monkeypatch.setattr(torch.cuda, "is_initialized", lambda: False)

    def initialises(*args, **kwargs):
        raise AssertionError("this would initialise CUDA in the process that forks the workers")

    for name in ("get_device_capability", "get_device_name", "get_device_properties"):
        monkeypatch.setattr(torch.cuda, name, initialises)
    asked = []

    def child(index):
        asked.append(index)
        return (7, 5), "Tesla T4"

    monkeypatch.setattr(pricer.base.precision, "_ask_a_child", child)
    assert default_precision("auto") == "16-mixed"
    assert "Tesla T4 (compute capability 7.5)" in emulated_bf16_warning("bf16-mixed", "gpu")
    assert resolve_dtype("auto", torch.device("cuda", 0)) == torch.float16
    assert asked and set(asked) == {0}


def test_the_child_that_answers_runs_torch_in_its_own_process(monkeypatch):
    """The child's command, run for real on a stand-in torch that reports a card."""
    import subprocess
    import sys

    import pricer.base.precision

    fake = (
        "import sys, types; torch = types.ModuleType('torch'); cuda = types.SimpleNamespace("
        "get_device_capability=lambda i: (8, 9), get_device_name=lambda i: 'NVIDIA L4'); "
        "torch.cuda = cuda; sys.modules['torch'] = torch; "
    )
    real_run = subprocess.run

    def run(command, **kwargs):
        assert command[:2] == [sys.executable, "-c"]
        return real_run([command[0], "-c", fake + command[2], *command[3:]], **kwargs)

    monkeypatch.setattr(pricer.base.precision.subprocess, "run", run)
    pricer.base.precision._ask_a_child.cache_clear()
    try:
        assert pricer.base.precision._ask_a_child(0) == ((8, 9), "NVIDIA L4")
    finally:
        pricer.base.precision._ask_a_child.cache_clear()


def test_serving_a_bf16_adapter_on_a_t4_warns_that_it_is_emulated(card, monkeypatch, tiny_llama):
    from transformers import AutoModelForCausalLM

    from pricer.read.recipe import Recipe
    from pricer.read.serving import Pricer

    recorder = LoadRecorder(AutoModelForCausalLM.from_pretrained)
    monkeypatch.setattr(AutoModelForCausalLM, "from_pretrained", recorder)
    card("Tesla T4")
    with pytest.warns(UserWarning, match=r"Tesla T4 \(compute capability 7.5\) has no bf16 tensor cores"):
        Pricer(
            Recipe(base_model=tiny_llama, quantization={"weights": "none"}, precision="bf16-mixed"),
            None,
            device="cuda",
        )
    card("NVIDIA L4")
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        Pricer(
            Recipe(base_model=tiny_llama, quantization={"weights": "none"}, precision="bf16-mixed"),
            None,
            device="cuda",
        )


@pytest.mark.parametrize(
    "failure, cause",
    [
        ("exit", "the process that asks exited with 1: RuntimeError: CUDA-capable device(s) is/are busy"),
        ("timeout", "the process that asks gave no answer in 300 s"),
        ("missing", "FileNotFoundError"),
    ],
)
def test_a_card_whose_capability_cannot_be_asked_is_taken_for_fp16_and_said(
    monkeypatch, capsys, failure, cause
):
    """A GPU in exclusive-process mode under DDP, or a Python outside the notebook's environment:
    the child fails; NVML answers when it can, else the card is taken for one without bf16 (fp16
    runs on every card), in one line naming the cause and what to set."""
    import subprocess
    import sys

    import pricer.base.precision as precision

    def run(command, **kwargs):
        if failure == "exit":
            raise subprocess.CalledProcessError(
                1, command, "", "Traceback ...\nRuntimeError: CUDA-capable device(s) is/are busy"
            )
        if failure == "timeout":
            raise subprocess.TimeoutExpired(command, 300)
        raise FileNotFoundError(2, "No such file or directory", sys.executable)

    monkeypatch.setattr(precision.subprocess, "run", run)
    monkeypatch.setattr(precision, "_ask_nvml", lambda index: None)
    precision._ask_a_child.cache_clear()
    try:
        assert precision._ask_a_child(0) == precision.UNKNOWN_CARD
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and cause in err[0] and "taken for a card without bf16 (16-mixed" in err[0]
        assert "trainer.precision" in err[0]
        precision._ask_a_child.cache_clear()
        monkeypatch.setattr(precision, "_ask_nvml", lambda index: ((8, 6), "NVIDIA A10G"))
        assert precision._ask_a_child(0) == ((8, 6), "NVIDIA A10G")
        assert "its compute capability is NVML's" in capsys.readouterr().err
    finally:
        precision._ask_a_child.cache_clear()


def test_fp16_asked_of_a_cpu_is_warned_about_in_fit_and_in_pricer(cpu, tiny_llama):
    """A T4-tested adapter (16-mixed) served on a CPU Space: it runs as bf16-mixed there, as
    Lightning runs it, which this CPU emulates; fp16 proper (16-true) is emulated too."""
    from pricer.read.recipe import Recipe
    from pricer.read.serving import Pricer

    cpu(native=False)
    warning = emulated_bf16_warning("16-mixed", "cpu")
    assert (
        "trainer.precision=16-mixed (bf16-mixed on a CPU) on this CPU (AVX2, without AVX512-BF16" in warning
    )
    assert "--trainer.precision 32-true" in warning
    warning = emulated_bf16_warning("16-true", "cpu")
    assert "trainer.precision=16-true on this CPU (AVX2, without AMX-FP16): fp16" in warning
    with pytest.warns(
        UserWarning, match=r"tested under 16-mixed, and is read under bf16-mixed as a CPU reads it"
    ):
        Pricer(
            Recipe(base_model=tiny_llama, quantization={"weights": "none"}, precision="16-mixed"),
            None,
            device="cpu",
        )
