import struct

from goalrank.evaluate.plots import PANEL_SIZE_INCHES, PANELS_PER_ROW, Curve, plot_panels


def png_size(path):
    header = path.read_bytes()[:24]
    assert header[:8] == b"\x89PNG\r\n\x1a\n"
    return struct.unpack(">II", header[16:24])


def curves(metrics):
    return [Curve(label=name, x=[1e5, 1e6], mean={m: [0.1, 0.2] for m in metrics},
                  std={m: [0.0, 0.01] for m in metrics}) for name in ("GoalRank", "DNN")]


def test_many_metrics_wrap_into_rows_of_panels(tmp_path):
    metrics = [f"m{i}" for i in range(13)]
    path = plot_panels(curves(metrics), metrics, "parameters", "Scaling", tmp_path / "s.png")
    width, height = png_size(path)
    dpi = 100
    assert (width, height) == (round(PANEL_SIZE_INCHES * PANELS_PER_ROW * dpi), round(PANEL_SIZE_INCHES * 3 * dpi))


def test_few_metrics_stay_in_one_row(tmp_path):
    metrics = ["NDCG@6", "true_reward"]
    width, height = png_size(plot_panels(curves(metrics), metrics, "K", "Group size", tmp_path / "g.png", log_x=False))
    assert (width, height) == (round(PANEL_SIZE_INCHES * 2 * 100), round(PANEL_SIZE_INCHES * 100))
