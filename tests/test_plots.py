def test_error_bars_clip_a_rounding_miss():
    from lcopt.plots import _err_bars

    assert _err_bars(1.0, 1.0000000000000002, 1.0) == (0.0, 0.0)
    assert _err_bars(0.5, 0.25, 0.75) == (25.0, 25.0)
