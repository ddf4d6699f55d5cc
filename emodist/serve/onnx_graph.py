"""Exact rewrites of an exported ONNX graph: the same arithmetic in fewer or cheaper nodes, which ONNX Runtime
runs faster.

    rewritten = onnx_graph.attention_3d(Path("export/model.onnx"), num_heads=12)

`attention_3d`: torch's exporter writes each layer's scaled-dot-product attention (at opset 23) as an ONNX
`Attention` node on (batch, heads, length, head size) tensors: every Q, K and V projection is reshaped and
transposed into that layout before it, and the output transposed and reshaped back to (batch, length, hidden)
after it. ONNX's `Attention` also takes the projections as they are, (batch, length, hidden) with
`q_num_heads`/`kv_num_heads`, and then returns (batch, length, hidden) itself: the rewrite drops those 4
Transposes and 4 Reshapes per layer.

The exporter also zeroes the output rows of queries with no key to attend to, `Where(row has no key, 0, out)`.
After the rewrite it is `out * keep`, keep being 0.0 for those rows and 1.0 for the others, computed once for
all layers: ONNX Runtime broadcasts a multiplication over (batch, length, hidden) faster than a Where. The two
agree wherever `out` is finite, which the rewrite makes sure of: it takes this form only when the attention mask
is 0 or a finite number (the exporter's `mask * finfo.min`), so a masked score stays finite and so does every
attention output row. Anything else and the layer is left as it is.

Measured on minilm's int8 export (bench/RESULTS.md): the same logits to the bit, and faster on 2 cores.
Only nodes that match the whole pattern are rewritten; the weights are not read or rewritten (the graph file is
saved again beside the same external data file).
"""

from __future__ import annotations

from pathlib import Path

HEADS_FIRST = [0, 2, 1, 3]
"""The permutation between (batch, length, heads, head size) and (batch, heads, length, head size)."""


def attention_3d(path: Path, num_heads: int) -> int:
    """Rewrite the graph file `path` in place as the module says; how many Attention nodes were rewritten."""
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    graph = _Graph(model.graph)
    rewritten = sum(graph.rewrite(node, num_heads) for node in list(model.graph.node) if node.op_type == "Attention")
    if rewritten:
        graph.commit()
        onnx.save(model, str(path))
    return rewritten


class _Graph:
    """One graph's nodes, who produces and who consumes each value, and the edits decided so far."""

    def __init__(self, graph):
        self.graph = graph
        self.producer = {out: node for node in graph.node for out in node.output}
        self.consumers: dict[str, list] = {}
        for node in graph.node:
            for name in node.input:
                self.consumers.setdefault(name, []).append(node)
        self.outputs = {out.name for out in graph.output}
        self.shapes = {info.name: info.type.tensor_type.shape for info in graph.value_info}
        self.scalars = {init.name: init for init in graph.initializer if not init.dims}
        self.dropped: set[str] = set()  # the nodes to remove, by their first output (unique in a graph)
        self.replaced: dict[str, list] = {}  # a node (its first output) -> the nodes that take its place
        self.keep: dict[str, str] = {}  # a (batch, 1, length, 1) no-key condition -> its (batch, length, 1) 0/1
        self.stale: set[str] = set()  # values whose recorded shape no longer holds

    def rewrite(self, attention, num_heads: int) -> bool:
        """Rewrite one Attention node if its inputs and output match the pattern; whether it did."""
        from onnx import helper

        if len(attention.input) < 3 or any(a.name in ("q_num_heads", "kv_num_heads") for a in attention.attribute):
            return False
        views = [self._heads_first_view(name) for name in attention.input[:3]]
        back = self._back_to_hidden(attention)
        if None in views or back is None:
            return False
        where, transpose, reshape = back
        for position, (projection, view) in enumerate(views):
            attention.input[position] = projection
            self._drop_view(*view)
        attention.attribute.extend([helper.make_attribute("q_num_heads", num_heads),
                                    helper.make_attribute("kv_num_heads", num_heads)])
        self.stale.add(attention.output[0])
        output = attention.output[0]
        if where is not None:  # zero the same rows, now of (batch, length, hidden)
            keep = self._keep(where)
            self.replaced.setdefault(where.output[0], []).append(
                helper.make_node("Mul", [attention.output[0], keep], [where.output[0]], name=f"{where.name}_as_mul"))
            self.dropped.add(where.output[0])
            self.stale.add(where.output[0])
            output = where.output[0]
        for user in self.consumers.get(reshape.output[0], []):
            user.input[:] = [output if name == reshape.output[0] else name for name in user.input]
        self.dropped |= {transpose.output[0], reshape.output[0]}
        return True

    def _heads_first_view(self, name: str):
        """(projection, (Transpose, Reshape)) when `name` is Transpose(HEADS_FIRST) of a Reshape of a
        projection, read by the Attention node only; else None."""
        transpose = self.producer.get(name)
        if transpose is None or transpose.op_type != "Transpose" or _perm(transpose) != HEADS_FIRST:
            return None
        reshape = self.producer.get(transpose.input[0])
        if reshape is None or reshape.op_type != "Reshape" or self._only_consumer(name) is None:
            return None
        return reshape.input[0], (transpose, reshape)

    def _back_to_hidden(self, attention):
        """(Where or None, Transpose, Reshape) when the Attention output goes, alone, through an optional
        Where(no key in the row, 0, output) (only with a finite mask) and then Transpose(HEADS_FIRST) and
        Reshape; else None."""
        name = attention.output[0]
        where = self._only_consumer(name)
        if where is not None and where.op_type == "Where":
            zero = self._scalar(where.input[1])
            if where.input[2] != name or zero != 0 or not self._per_row(where.input[0]) or not self._finite_mask(attention):
                return None
            name = where.output[0]
        else:
            where = None
        transpose = self._only_consumer(name)
        if transpose is None or transpose.op_type != "Transpose" or _perm(transpose) != HEADS_FIRST:
            return None
        reshape = self._only_consumer(transpose.output[0])
        if reshape is None or reshape.op_type != "Reshape" or reshape.output[0] in self.outputs:
            return None
        return where, transpose, reshape

    def _finite_mask(self, attention) -> bool:
        """Whether the Attention node's mask is the exporter's additive one: Cast of a boolean to 0/1, times a
        finite scalar. Then every masked score is finite, and so is every output row."""
        if len(attention.input) < 4 or not attention.input[3]:
            return False
        scaled = self.producer.get(attention.input[3])
        if scaled is None or scaled.op_type != "Mul":
            return False
        for cast_name, factor in (scaled.input, scaled.input[::-1]):
            cast, value = self.producer.get(cast_name), self._scalar(factor)
            if cast is not None and cast.op_type == "Cast" and value is not None and abs(value) < float("inf"):
                source = self.producer.get(cast.input[0])
                return source is not None and source.op_type in ("Not", "And", "Or", "Less", "Greater", "Equal")
        return False

    def _scalar(self, name: str) -> float | None:
        """The value of a scalar initializer held in the graph file, else None."""
        from onnx import TensorProto, numpy_helper

        tensor = self.scalars.get(name)
        if tensor is None or tensor.data_location == TensorProto.EXTERNAL:
            return None
        return float(numpy_helper.to_array(tensor))

    def _per_row(self, name: str) -> bool:
        """Whether the graph records `name` as (batch, 1, length, 1): one flag per query row."""
        shape = self.shapes.get(name)
        return shape is not None and len(shape.dim) == 4 and shape.dim[1].dim_value == 1 == shape.dim[3].dim_value

    def _only_consumer(self, name: str):
        users = self.consumers.get(name, [])
        return users[0] if len(users) == 1 and name not in self.outputs else None

    def _drop_view(self, transpose, reshape) -> None:
        """Drop a view's Transpose (read by the Attention node only), and its Reshape once no one else reads it."""
        self.dropped.add(transpose.output[0])
        if all(user.output[0] in self.dropped for user in self.consumers.get(reshape.output[0], [])):
            self.dropped.add(reshape.output[0])

    def _keep(self, where) -> str:
        """The Where's condition (batch, 1, length, 1) as 1.0 where a row has keys and 0.0 where it has none,
        (batch, length, 1) in the output's type: made once, where its first reader was."""
        from onnx import helper

        condition = where.input[0]
        if condition not in self.keep:
            name = f"{condition}_keep"
            self.replaced.setdefault(where.output[0], []).extend([
                helper.make_node("Constant", [], [f"{name}_axes"], value=helper.make_tensor(f"{name}_axes", 7, [1], [1])),
                helper.make_node("Squeeze", [condition, f"{name}_axes"], [f"{name}_rows"]),
                helper.make_node("Not", [f"{name}_rows"], [f"{name}_bool"]),
                helper.make_node("Cast", [f"{name}_bool"], [name], to=self.scalars[where.input[1]].data_type)])
            self.keep[condition] = name
        return self.keep[condition]

    def commit(self) -> None:
        """Apply the edits: each replaced node's new nodes where it was (the order stays topological), the
        dropped nodes out (and those only they read from), and the recorded shapes of the values whose shape
        changed forgotten (ONNX Runtime infers them again)."""
        nodes = []
        for node in self.graph.node:
            if node.output[0] not in self.dropped:
                nodes.append(node)
            nodes.extend(self.replaced.get(node.output[0], []))
        nodes = _live(nodes, self.outputs)
        del self.graph.node[:]
        self.graph.node.extend(nodes)
        kept = [info for info in self.graph.value_info if info.name not in self.stale]
        del self.graph.value_info[:]
        self.graph.value_info.extend(kept)
        read = {name for node in nodes for name in node.input}
        used = [init for init in self.graph.initializer if init.name in read]
        del self.graph.initializer[:]
        self.graph.initializer.extend(used)


def _live(nodes: list, outputs: set[str]) -> list:
    """`nodes` without those whose outputs nothing reads (the shapes the dropped Reshapes were given, say)."""
    while True:
        read = outputs | {name for node in nodes for name in node.input}
        live = [node for node in nodes if any(name in read for name in node.output)]
        if len(live) == len(nodes):
            return nodes
        nodes = live


def _perm(node) -> list[int] | None:
    from onnx import helper

    for attribute in node.attribute:
        if attribute.name == "perm":
            return list(helper.get_attribute_value(attribute))
    return None
