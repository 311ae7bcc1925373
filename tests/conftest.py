"""Shared fixtures: a digits teacher trained once per session in a temporary cache."""

import os

import pytest
import torch

os.environ.setdefault("XDNB_QUIET", "1")


@pytest.fixture(scope="session")
def cache_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("xdnb-cache")


@pytest.fixture(scope="session")
def digits_teacher(cache_dir):
    from xdnb import models

    torch.manual_seed(0)
    return models.teacher("digits", seed=0, cache_dir=cache_dir)


@pytest.fixture(scope="session")
def digits_data():
    from xdnb import data

    train, test = data.digits("train"), data.digits("test")
    return train, data.stack(test)


@pytest.fixture(scope="session")
def few_shot_5(digits_data):
    from xdnb import data

    train, _ = digits_data
    return data.stack(train, data.few_shot(train, 5, seed=0))


@pytest.fixture(scope="session", autouse=True)
def one_thread():
    """The whole suite runs on one torch thread, like the stored notebook outputs: results are
    reproducible, and on an oversubscribed 2-core machine two OpenMP threads can make the small
    convolutions here 10-50x slower (threads waiting on each other)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


class RunCaptured(Exception):
    """Raised by :func:`captured_runs`' stand-in for ``xdnb.experiment.run``."""


@pytest.fixture
def captured_runs(monkeypatch):
    """``xdnb.experiment.run`` replaced by a stub that records the RunConfig it gets and raises
    :class:`RunCaptured` (so a CLI call stops before any work); returns the list of configs."""
    from xdnb import experiment

    seen = []

    def capture(config, *args, **kwargs):
        seen.append(config)
        raise RunCaptured

    monkeypatch.setattr(experiment, "run", capture)
    return seen
