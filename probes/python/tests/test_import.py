import leakhound_probe


def test_version_is_set():
    assert leakhound_probe.__version__.count(".") == 2
