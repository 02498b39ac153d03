"""Drawing strokes with the mouse in JupyterLab: an ``ipycanvas`` canvas over the image, class buttons, and the
playground's panels redrawn after each stroke (:mod:`scribbleseg.lab.playground`).

Written by hand on top of ipycanvas (mouse events, drawing) and ipywidgets (buttons, the panels as a PNG image):
turning mouse events into ScribbleSup strokes and redrawing the views is this project's own job.

Controls: one toggle button per class (the colour of its strokes), the canvas (press, drag, release: one stroke),
"undo", "clear", "save" (ScribbleSup XML under ``save_dir``), "load" (the file "save" writes for this image), an
image index of ``data`` and an upload button (any picture, resized to the training size). ``status`` says how
many strokes and redraws there are; the browser test reads it.

Shapes: the canvas is the image scaled by ``scale``; stroke points are stored in image pixels (x, y).
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable

import ipywidgets as widgets
import numpy as np
from ipycanvas import MultiCanvas, hold_canvas

from scribbleseg.data.folder import SplitData
from scribbleseg.data.io import voc_palette
from scribbleseg.lab.playground import Sketch, compute, figure, from_split, from_upload, png

_PAL = np.array(voc_palette(), dtype=np.uint8).reshape(256, 3)


class Canvas:
    """The interactive playground for ``sketch`` and ``views`` (see :func:`scribbleseg.lab.playground.compute`).

    Args:
        sketch: the image and its first strokes. views: {name: view}. data: the split whose images the index picks
            (None: no picker). scale: canvas pixels per image pixel. save_dir: where "save" writes.
    """

    def __init__(self, sketch: Sketch, views: dict[str, Callable], data: SplitData | None = None, scale: int = 3,
                 save_dir: Path = Path("strokes")):
        self.sketch, self.views, self.scale, self.save_dir = sketch, views, scale, Path(save_dir)
        self.redraws, self._points = 0, None
        h, w = sketch.size
        px = f"{w * scale}px"                                                # the controls column is the canvas wide
        self.canvas = MultiCanvas(2, width=w * scale, height=h * scale,
                                  layout=widgets.Layout(width=px, height=f"{h * scale}px", min_width=px))
        self.classes = widgets.ToggleButtons(options=[(n, i) for i, n in enumerate(sketch.class_names)],
                                             value=1 if len(sketch.class_names) > 1 else 0, style={"button_width": "88px"},
                                             layout=widgets.Layout(display="flex", flex_flow="row wrap", width=px))
        self.status = widgets.Label()
        self.panels = widgets.Image(format="png")
        buttons = [self._button(name, fn) for name, fn in
                   (("undo", self.undo), ("clear", self.clear), ("save", self.save), ("load", self.load))]
        pickers = []
        if data is not None:
            first = list(data.ids).index(sketch.name) if sketch.name in data.ids else 0
            self.index = widgets.BoundedIntText(value=first, min=0, max=len(data.ids) - 1, description="image")
            self.index.observe(lambda ch: self.set_sketch(from_split(data, int(ch["new"]), sketch.width)), "value")
            pickers.append(self.index)
        self.upload = widgets.FileUpload(accept="image/*", multiple=False, description="upload")
        self.upload.observe(self._uploaded, "value")
        pickers.append(self.upload)
        self.canvas.on_mouse_down(self.press)
        self.canvas.on_mouse_move(self.drag)
        self.canvas.on_mouse_up(self.release)
        controls = widgets.VBox([self.classes, self.canvas, widgets.HBox(buttons), widgets.HBox(pickers), self.status],
                                layout=widgets.Layout(min_width=f"{w * scale + 16}px", flex="0 0 auto"))
        self.widget = widgets.HBox([controls, self.panels])
        self.set_sketch(sketch)

    @staticmethod
    def _button(name: str, fn: Callable) -> widgets.Button:
        b = widgets.Button(description=name, layout=widgets.Layout(width="70px"))
        b.on_click(lambda _b: fn())
        return b

    def set_sketch(self, sketch: Sketch) -> None:
        """Show another image (and its strokes) and redraw."""
        self.sketch = sketch
        with hold_canvas(self.canvas):
            self.canvas[0].put_image_data(np.kron(sketch.image, np.ones((self.scale, self.scale, 1), np.uint8)), 0, 0)
        self.refresh()

    # -- mouse: one stroke per press-drag-release, in image pixels --------------------------------------------
    def press(self, x: float, y: float) -> None:
        self._points = [(x / self.scale, y / self.scale)]

    def drag(self, x: float, y: float) -> None:
        if self._points is None:
            return
        (x0, y0), p = self._points[-1], (x / self.scale, y / self.scale)
        self._points.append(p)
        layer = self.canvas[1]
        layer.stroke_style = "rgb({},{},{})".format(*_PAL[self.classes.value])
        layer.line_width, layer.line_cap = self.sketch.width * self.scale, "round"
        layer.stroke_line(x0 * self.scale, y0 * self.scale, x, y)

    def release(self, x: float, y: float) -> None:
        if self._points is None:
            return
        self.drag(x, y)
        self.sketch.add(self.classes.value, self._points)
        self._points = None
        self.refresh()

    # -- buttons ---------------------------------------------------------------------------------------------
    def undo(self) -> None:
        self.sketch.undo()
        self.refresh()

    def clear(self) -> None:
        self.sketch.clear()
        self.refresh()

    def path(self) -> Path:
        return self.save_dir / f"{self.sketch.name}.xml"

    def save(self) -> None:
        self.status.value = f"saved {self.sketch.save(self.path())}"

    def load(self) -> None:
        if not self.path().exists():
            self.status.value = f"{self.path()} does not exist: draw strokes and press save first"
            return
        self.sketch.load(self.path())
        self.refresh()

    def _uploaded(self, change) -> None:
        files = change["new"]
        if files:
            f = files[0]
            self.set_sketch(from_upload(bytes(f["content"]), self.sketch.size, self.sketch.class_names, f["name"],
                                        self.sketch.width))

    # -- drawing -----------------------------------------------------------------------------------------------
    def refresh(self) -> None:
        """Redraw the strokes layer and every view's panels."""
        layer = self.canvas[1]
        with hold_canvas(self.canvas):
            layer.clear()
            layer.line_cap = "round"
            layer.line_width = self.sketch.width * self.scale
            for s in self.sketch.strokes:
                layer.stroke_style = "rgb({},{},{})".format(*_PAL[s.cls])
                pts = np.asarray(s.points) * self.scale
                if len(pts) == 1:
                    pts = np.concatenate([pts, pts + 0.5])                     # a point: a dot
                layer.stroke_lines(pts.tolist())
        self.panels.value = png(figure(self.sketch, compute(self.sketch, self.views)))
        self.redraws += 1
        self.status.value = f"{self.sketch.name}: {len(self.sketch.strokes)} strokes, redraw {self.redraws}"
