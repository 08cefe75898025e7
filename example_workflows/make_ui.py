"""Write the UI-format workflows (what ComfyUI's workflow browser and "Open" load) from
their API-format twins in ``api/``, so the two never drift apart.

    python example_workflows/make_ui.py          # rewrite example_workflows/*.json
    python example_workflows/make_ui.py --check  # exit 1 if any is out of date (the tests do this)

Widget values follow each node's ``INPUT_TYPES`` order (required, then optional), with the
extra values ComfyUI's frontend stores: ``"fixed"`` after a seed (``control_after_generate``)
and ``"image"`` after LoadImage's file (its upload button). Nodes are laid out in columns by
their depth in the graph.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
WIDGET_TYPES = ("INT", "FLOAT", "STRING", "BOOLEAN")
COLUMN_GAP, ROW_GAP = 60, 40
NODE_WIDTH = 320
"""ComfyUI's default node width; wider where the title needs it."""
TITLE_CHAR_WIDTH, TITLE_PADDING = 9, 70
"""The frontend's title font (about 9 px a character) plus the collapse dot and margins."""
IMAGE_PREVIEW_HEIGHT = 280
"""Room for the image preview that LoadImage, SaveImage and PreviewImage grow once an image
loads (ComfyUI's frontend sizes LoadImage to about 320x314), so it covers no other node."""
PREVIEW_NODES = frozenset({"LoadImage", "SaveImage", "PreviewImage"})


def _node_types() -> dict[str, type]:
    sys.path.insert(0, str(HERE.parent))
    from nodes.runner import node_types

    return node_types()


def _is_link(value: Any) -> bool:
    return isinstance(value, list) and len(value) == 2 and isinstance(value[1], int)


def _is_widget(spec: tuple[Any, ...]) -> bool:
    return isinstance(spec[0], list | tuple) or spec[0] in WIDGET_TYPES


def _depths(api: dict[str, Any]) -> dict[str, int]:
    depth: dict[str, int] = {}

    def visit(node_id: str) -> int:
        if node_id not in depth:
            sources = [str(v[0]) for v in api[node_id]["inputs"].values() if _is_link(v)]
            depth[node_id] = 1 + max((visit(s) for s in sources), default=-1)
        return depth[node_id]

    for node_id in api:
        visit(node_id)
    return depth


def _node_size(class_type: str, title: str, widgets: int, slots: int) -> tuple[int, int]:
    """A node's (width, height): its title fits, and preview nodes have room for the image."""
    width = max(NODE_WIDTH, TITLE_CHAR_WIDTH * len(title) + TITLE_PADDING)
    height = 60 + 26 * (widgets + slots)
    if class_type in PREVIEW_NODES:
        height += IMAGE_PREVIEW_HEIGHT
    return width, height


def _place_columns(nodes: list[dict[str, Any]]) -> None:
    """Turn column indices into x positions: each column as wide as its widest node."""
    widths: dict[int, int] = {}
    for item in nodes:
        column = int(item["pos"][0])
        widths[column] = max(widths.get(column, 0), int(item["size"][0]))
    lefts, x = {}, 0
    for column in sorted(widths):
        lefts[column] = x
        x += widths[column] + COLUMN_GAP
    for item in nodes:
        item["pos"][0] = lefts[int(item["pos"][0])]


def api_to_ui(api: dict[str, Any], types: dict[str, type]) -> dict[str, Any]:
    """The UI-format graph of an API-format workflow (node ids kept)."""
    links: list[list[Any]] = []
    out_links: dict[tuple[str, int], list[int]] = {}
    nodes: list[dict[str, Any]] = []
    depth = _depths(api)
    rows: dict[int, float] = {}
    for order, node_id in enumerate(sorted(api, key=lambda n: (depth[n], int(n)))):
        node = api[node_id]
        cls = types[node["class_type"]]
        spec_sections = cls.INPUT_TYPES()
        specs = {**spec_sections.get("required", {}), **spec_sections.get("optional", {})}
        inputs, widgets = [], []
        for name, spec in specs.items():
            value = node["inputs"].get(name)
            if _is_link(value):
                link_id = len(links) + 1
                source, slot = str(value[0]), value[1]
                link_type = types[api[source]["class_type"]].RETURN_TYPES[slot]
                links.append([link_id, int(source), slot, int(node_id), len(inputs), link_type])
                out_links.setdefault((source, slot), []).append(link_id)
                entry: dict[str, Any] = {"name": name, "type": link_type if _is_widget(spec) else spec[0], "link": link_id}
                if _is_widget(spec):
                    entry["widget"] = {"name": name}
                inputs.append(entry)
            elif _is_widget(spec):
                options = spec[1] if len(spec) > 1 else {}
                widgets.append(value if value is not None else options.get("default"))
                if options.get("control_after_generate"):
                    widgets.append("fixed")
                if options.get("image_upload"):
                    widgets.append("image")
            elif name in specs and name in spec_sections.get("required", {}):
                inputs.append({"name": name, "type": spec[0], "link": None})
            elif name in spec_sections.get("optional", {}):
                inputs.append({"name": name, "type": spec[0], "link": None, "shape": 7})
        names = getattr(cls, "RETURN_NAMES", None) or cls.RETURN_TYPES
        title = node.get("_meta", {}).get("title", node["class_type"])
        width, height = _node_size(node["class_type"], title, len(widgets), max(len(inputs), len(cls.RETURN_TYPES)))
        column = depth[node_id]
        top = rows.get(column, 0.0)
        rows[column] = top + height + ROW_GAP
        nodes.append(
            {
                "id": int(node_id),
                "type": node["class_type"],
                "pos": [column, top],  # column index until the column widths are known
                "size": [width, height],
                "flags": {},
                "order": order,
                "mode": 0,
                "title": title,
                "inputs": inputs,
                "outputs": [
                    {"name": name, "type": kind, "links": None, "slot_index": slot}
                    for slot, (name, kind) in enumerate(zip(names, cls.RETURN_TYPES, strict=True))
                ],
                "properties": {"Node name for S&R": node["class_type"]},
                "widgets_values": widgets,
            }
        )
    _place_columns(nodes)
    for item in nodes:
        for output in item["outputs"]:
            output["links"] = out_links.get((str(item["id"]), output["slot_index"]), [])
    return {
        "last_node_id": max(int(n) for n in api),
        "last_link_id": len(links),
        "nodes": nodes,
        "links": links,
        "groups": [],
        "config": {},
        "extra": {},
        "version": 0.4,
    }


def expected_files() -> dict[Path, str]:
    """UI file -> its content, for every API workflow."""
    types = _node_types()
    result = {}
    for api_file in sorted((HERE / "api").glob("*.json")):
        api = json.loads(api_file.read_text(encoding="utf-8"))
        result[HERE / api_file.name] = json.dumps(api_to_ui(api, types), indent=2) + "\n"
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="only check that the UI files are up to date")
    args = parser.parse_args()
    stale = []
    for path, text in expected_files().items():
        current = path.read_text(encoding="utf-8") if path.exists() else None
        if current != text:
            stale.append(path.name)
            if not args.check:
                path.write_text(text, encoding="utf-8")
    if args.check and stale:
        print(f"out of date: {', '.join(stale)} (run python example_workflows/make_ui.py)", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
