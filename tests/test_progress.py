"""The one progress-bar helper honours conf.progress, progress= and min_total."""

from astroclip import conf
from astroclip._progress import progress_bar, progress_enabled


def test_progress_enabled_follows_the_configuration():
    with conf.set_temp("progress", False):
        assert progress_enabled() is False
        assert progress_enabled(True) is True
    with conf.set_temp("progress", True):
        assert progress_enabled() is True
        assert progress_enabled(False) is False


def _shown(**kwargs):
    bar = progress_bar(range(5), desc="work", **kwargs)
    shown = not bar.disable
    assert list(bar) == [0, 1, 2, 3, 4]        # iterates the same, shown or not
    return shown


def test_progress_bar_switches(capsys):
    with conf.set_temp("progress", True):
        assert _shown()
        assert not _shown(progress=False)
        assert not _shown(min_total=5)          # too little work for a bar
        assert _shown(min_total=4)
    with conf.set_temp("progress", False):
        assert not _shown()
        assert _shown(progress=True)


def test_progress_bar_counts_updates_and_prints_nothing_when_off(capsys):
    with progress_bar(total=10, initial=4, desc="resumed", progress=True) as bar:
        bar.update(3)
    assert "resumed" in capsys.readouterr().err and bar.n == 7
    with progress_bar(total=10, desc="hidden", progress=False) as bar:
        bar.update(3)
    assert capsys.readouterr().err == ""
