/** Node positions: tasks linked by dependencies are laid out as a DAG (dagre, top to bottom); lone tasks, the
 * common case of independent cells, fill a grid beside it in creation order, which stays fast at thousands. */

import dagre from '@dagrejs/dagre';

export const NODE_WIDTH = 150;
export const NODE_HEIGHT = 44;
const GAP = 16;

export interface Point {
  x: number;
  y: number;
}

export function layout(ids: string[], edges: Array<[string, string]>, columns = 6): Map<string, Point> {
  const linked = new Set(edges.flat());
  const positions = new Map<string, Point>();
  let right = 0;
  if (linked.size) {
    const graph = new dagre.graphlib.Graph();
    graph.setGraph({ rankdir: 'TB', nodesep: GAP, ranksep: 2 * GAP });
    graph.setDefaultEdgeLabel(() => ({}));
    for (const id of ids) {
      if (linked.has(id)) {
        graph.setNode(id, { width: NODE_WIDTH, height: NODE_HEIGHT });
      }
    }
    for (const [source, target] of edges) {
      graph.setEdge(source, target);
    }
    dagre.layout(graph);
    for (const id of linked) {
      const node = graph.node(id);
      if (node) {
        positions.set(id, { x: node.x - NODE_WIDTH / 2, y: node.y - NODE_HEIGHT / 2 });
        right = Math.max(right, node.x + NODE_WIDTH / 2 + 3 * GAP);
      }
    }
  }
  let index = 0;
  for (const id of ids) {
    if (!linked.has(id)) {
      const column = index % columns;
      const row = Math.floor(index / columns);
      positions.set(id, { x: right + column * (NODE_WIDTH + GAP), y: row * (NODE_HEIGHT + GAP) });
      index++;
    }
  }
  return positions;
}
