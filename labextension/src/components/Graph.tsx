import { Background, Controls, type Edge, type Node, type NodeProps, ReactFlow, type ReactFlowInstance } from '@xyflow/react';
import React, { memo, useEffect, useMemo, useRef } from 'react';

import { layout, NODE_HEIGHT, NODE_WIDTH } from '../layout';
import type { GraphView } from '../model';
import type { Task } from '../types';

type TaskNodeData = { task: Task; selected: boolean };

const TaskNode = memo(function TaskNode({ data }: NodeProps<Node<TaskNodeData>>) {
  const { task, selected } = data;
  return (
    <div
      className={`hetflow-node hetflow-state-${task.state}${selected ? ' hetflow-selected' : ''}`}
      style={{ width: NODE_WIDTH, height: NODE_HEIGHT }}
      data-task={task.id}
      data-state={task.state}
      aria-label={`task ${task.name}, ${task.state}`}
      title={`${task.name} · ${task.executor} · ${task.state}`}
    >
      <div className="hetflow-node-name">{task.name}</div>
      <div className="hetflow-node-state">
        {task.state} · {task.executor}
      </div>
    </div>
  );
});

const NODE_TYPES = { task: TaskNode };

export interface GraphProps {
  view: GraphView;
  selected: string | null;
  onSelect: (id: string) => void;
}

export function Graph({ view, selected, onSelect }: GraphProps): JSX.Element {
  // the layout is redone only when nodes or edges come or go, not when a task changes state
  const shape = view.tasks.map(t => t.id).join(',') + '|' + view.edges.map(e => e.join('>')).join(',');
  const positions = useMemo(() => layout(view.tasks.map(t => t.id), view.edges), [shape]);
  const nodes: Node<TaskNodeData>[] = view.tasks.map(task => ({
    id: task.id,
    type: 'task',
    position: positions.get(task.id) ?? { x: 0, y: 0 },
    data: { task, selected: task.id === selected },
    draggable: false,
    connectable: false
  }));
  const edges: Edge[] = view.edges.map(([source, target]) => ({
    id: `${source}->${target}`,
    source,
    target,
    animated: view.tasks.find(t => t.id === target)?.state === 'running'
  }));
  const flow = useRef<ReactFlowInstance<Node<TaskNodeData>> | null>(null);
  useEffect(() => {
    void flow.current?.fitView({ maxZoom: 1 });
  }, [shape]);
  return (
    <div className="hetflow-graph" role="region" aria-label="workflow graph">
      <ReactFlow
        nodes={nodes}
        edges={edges}
        nodeTypes={NODE_TYPES}
        onInit={instance => {
          flow.current = instance;
          void instance.fitView({ maxZoom: 1 });
        }}
        onNodeClick={(_, node) => onSelect(node.id)}
        onlyRenderVisibleElements
        minZoom={0.05}
        proOptions={{ hideAttribution: true }}
        nodesDraggable={false}
      >
        <Background />
        <Controls showInteractive={false} />
      </ReactFlow>
    </div>
  );
}
