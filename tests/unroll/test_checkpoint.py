import pytest
import torch

from effdl.core.checkpoint import save_checkpoint
from effdl.core.errors import CheckpointError, ConfigError
from effdl.unroll import SOLVERS, build_solver, load_solver, make_problem, save_solver


@pytest.mark.parametrize("method", SOLVERS.names())
def test_every_solver_round_trips(method, tmp_path):
    problem = make_problem(m=20, n=40, snr_db=30.0)
    solver = build_solver(method, problem.A, 3)
    with torch.no_grad():
        for p in solver.parameters():
            p.add_(0.01 * torch.randn_like(p))
    path = save_solver(solver, tmp_path / "s.safetensors", problem=problem, fit={"seconds": 1.0})
    loaded = load_solver(path)
    b, _ = problem.sample(4, seed=0)
    assert type(loaded) is type(solver) and loaded.options() == solver.options()
    assert torch.equal(loaded(b), solver(b))
    assert loaded.problem_spec == problem.spec and loaded.checkpoint_meta["fit"]["seconds"] == 1.0


def test_bad_checkpoints(tmp_path):
    other = save_checkpoint(tmp_path / "other.safetensors", {"w": torch.ones(2)}, {"kind": "model"})
    with pytest.raises(CheckpointError, match=r"not an effdl\.unroll solver checkpoint"):
        load_solver(other)
    problem = make_problem(m=20, n=40)
    path = save_solver(build_solver("lista-cp", problem.A, 2), tmp_path / "s.safetensors")
    data = bytearray(path.read_bytes())
    (tmp_path / "cut.safetensors").write_bytes(bytes(data[: len(data) // 2]))
    with pytest.raises(CheckpointError):
        load_solver(tmp_path / "cut.safetensors")
    (tmp_path / "evil.pt").write_bytes(b"\x80\x04K\x01.")
    with pytest.raises(CheckpointError, match="pickle"):
        load_solver(tmp_path / "evil.pt")


def test_checkpoint_with_mismatched_tensors(tmp_path):
    problem = make_problem(m=20, n=40)
    state = build_solver("lista-cp", problem.A, 2).state_dict()
    state["layers.0.W"] = torch.zeros(3, 3)
    meta = {"kind": "effdl.unroll.solver", "method": "lista-cp", "layers": 2, "options": {}}
    path = save_checkpoint(tmp_path / "s.safetensors", state, meta)
    with pytest.raises(CheckpointError, match="does not rebuild a lista-cp solver"):
        load_solver(path)


def test_unknown_options_are_refused():
    with pytest.raises(ConfigError, match="unknown option"):
        build_solver("lista", make_problem(m=20, n=40).A, 2, support=True)
