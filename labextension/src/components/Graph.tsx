import { Background, Controls, type Edge, type Node, type NodeProps, ReactFlow, type ReactFlowInstance } from '@xyflow/react';
import React, { createContext, memo, useContext, useEffect, useMemo, useRef } from 'react';

import { useTask } from '../hooks';
import { layout, NODE_HEIGHT, NODE_WIDTH } from '../layout';
import type { GraphView, WorkflowModel } from '../model';
import type { Task } from '../types';

type TaskNodeData = { task: Task; selected: boolean };

/** The model the nodes read their tasks from: a task's change re-renders its node alone. */
const ModelContext = createContext<WorkflowModel | null>(null);

const TaskNode = memo(function TaskNode({ data }: NodeProps<Node<TaskNodeData>>) {
  const model = useContext(ModelContext);
  const live = useTask(model!, data.task.id);
  const task = live ?? data.task;
  const { selected } = data;
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
  model: WorkflowModel;
  view: GraphView;
  selected: string | null;
  onSelect: (id: string) => void;
}

export function Graph({ model, view, selected, onSelect }: GraphProps): JSX.Element {
  // the layout is redone only when nodes or edges come or go, not when a task changes state
  const shape = view.tasks.map(t => t.id).join(',') + '|' + view.edges.map(e => e.join('>')).join(',');
  const positions = useMemo(() => layout(view.tasks.map(t => t.id), view.edges), [shape]);
  // a node object is made again only when its selection or place changed: its task's state it reads from the
  // model itself (useTask), so that one event re-renders one node, not a thousand
  const made = useRef(new Map<string, Node<TaskNodeData>>());
  const nodes: Node<TaskNodeData>[] = view.tasks.map(task => {
    const position = positions.get(task.id) ?? { x: 0, y: 0 };
    const isSelected = task.id === selected;
    const previous = made.current.get(task.id);
    if (previous && previous.data.selected === isSelected && previous.position === position) {
      return previous;
    }
    const fresh: Node<TaskNodeData> = {
      id: task.id,
      type: 'task',
      position,
      data: { task, selected: isSelected },
      // every node has this size: given, a new node shows at once, without waiting to be measured (unmeasured, it
      // is hidden, and under the hub one was seen to stay hidden)
      width: NODE_WIDTH,
      height: NODE_HEIGHT,
      draggable: false,
      connectable: false
    };
    made.current.set(task.id, fresh);
    return fresh;
  });
  const running = new Set(view.tasks.filter(t => t.state === 'running').map(t => t.id));
  const edges: Edge[] = view.edges.map(([source, target]) => ({
    id: `${source}->${target}`,
    source,
    target,
    animated: running.has(target)
  }));
  const flow = useRef<ReactFlowInstance<Node<TaskNodeData>> | null>(null);
  const box = useRef<HTMLDivElement>(null);
  const fit = () => {
    // a hidden panel (the sidebar not shown yet) has no size: fitting then zooms to the minimum, where every
    // node is culled; the panel is fitted when it is shown instead
    if (box.current && box.current.clientWidth > 0 && box.current.clientHeight > 0) {
      void flow.current?.fitView({ maxZoom: 1 });
    }
  };
  const hasSelection = selected !== null; // the details pane opening makes the graph shorter: fit again
  useEffect(() => {
    const timer = setTimeout(fit, 50);
    return () => clearTimeout(timer);
  }, [shape, hasSelection]);
  useEffect(() => {
    const element = box.current;
    if (!element || typeof ResizeObserver === 'undefined') {
      return;
    }
    let shown = element.clientWidth > 0 && element.clientHeight > 0;
    const observer = new ResizeObserver(() => {
      const now = element.clientWidth > 0 && element.clientHeight > 0;
      if (now && !shown) {
        fit();
      }
      shown = now;
    });
    observer.observe(element);
    return () => observer.disconnect();
  }, []);
  return (
    <div className="hetflow-graph" role="region" aria-label="workflow graph" ref={box}>
      <ModelContext.Provider value={model}>
        <ReactFlow
          nodes={nodes}
          edges={edges}
          nodeTypes={NODE_TYPES}
          onInit={instance => {
            flow.current = instance;
            fit();
          }}
          onNodeClick={(_, node) => onSelect(node.id)}
          onSelectionChange={({ nodes: chosen }) => {
            // keyboard: Tab focuses a node, Enter or Space selects it
            if (chosen.length === 1 && chosen[0].id !== selected) {
              onSelect(chosen[0].id);
            }
          }}
          onlyRenderVisibleElements
          minZoom={0.05}
          proOptions={{ hideAttribution: true }}
          nodesDraggable={false}
        >
          <Background />
          <Controls showInteractive={false} />
        </ReactFlow>
      </ModelContext.Provider>
    </div>
  );
}
