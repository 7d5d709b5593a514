/**
 * The pipeline canvas: the browser half of `jupyter_byok.widgets.PipelineBuilder` (an
 * anywidget). React Flow draws the cards and wires, dagre lays out cards without a saved
 * position. The kernel holds the pipeline: every edit here is a message to it, and the cards
 * are redrawn from the synced `nodes`, `edges` and `node_state`. No key ever reaches this
 * code; keys are added in the BYOK panel (the header links to its command).
 */
import dagre from '@dagrejs/dagre';
import {
  Background,
  Controls,
  Edge,
  Handle,
  Node,
  NodeProps,
  Position,
  ReactFlow,
  ReactFlowProvider,
  applyNodeChanges,
  NodeChange,
  useNodesInitialized
} from '@xyflow/react';
import * as React from 'react';
import { createRoot } from 'react-dom/client';

import '@xyflow/react/dist/style.css';
import './canvas.css';

// ------------------------------------------------------------------ the model
interface Model {
  get(name: string): any;
  set(name: string, value: unknown): void;
  save_changes(): void;
  send(message: unknown): void;
  on(event: string, cb: () => void): void;
  off(event: string, cb: () => void): void;
}

interface CardView {
  name: string;
  kind: 'llm' | 'search' | 'python' | 'input';
  x: number | null;
  y: number | null;
  pinned?: boolean;
  problem: string | null;
  model?: string;
  template?: string;
  system?: string;
  max_tokens?: number;
  temperature?: number | null;
  depth?: string;
  function?: string;
}

interface LiveState {
  state?: string;
  text?: string;
  tokens_in?: number;
  tokens_out?: number;
  cost_usd?: string | null;
  saved_usd?: string | null;
  latency_s?: number;
  error?: string | null;
  rows_done?: number;
  rows_error?: number;
}

interface ModelOption {
  id: string;
  label: string;
}

function useTrait<T>(model: Model, name: string): T {
  const [value, setValue] = React.useState<T>(() => model.get(name));
  React.useEffect(() => {
    const changed = () => setValue(model.get(name));
    model.on(`change:${name}`, changed);
    return () => model.off(`change:${name}`, changed);
  }, [model, name]);
  return value;
}

const CARD_W = 280;
const CARD_H = 250;
const INPUT_H = 70;

function money(value: string | null | undefined): string {
  if (value === null || value === undefined) {
    return '$?';
  }
  const n = Number(value);
  return n === 0 ? '$0' : `$${n < 0.01 ? n.toPrecision(3) : n.toFixed(4)}`;
}

/** dagre positions (top-left corners) for every card, left to right. */
export function layout(views: CardView[], edges: { source: string; target: string }[]) {
  const g = new dagre.graphlib.Graph();
  g.setGraph({ rankdir: 'LR', nodesep: 30, ranksep: 80, marginx: 10, marginy: 10 });
  g.setDefaultEdgeLabel(() => ({}));
  for (const v of views) {
    g.setNode(v.name, { width: CARD_W, height: v.kind === 'input' ? INPUT_H : CARD_H });
  }
  for (const e of edges) {
    if (g.hasNode(e.source) && g.hasNode(e.target)) {
      g.setEdge(e.source, e.target);
    }
  }
  dagre.layout(g);
  const out: Record<string, [number, number]> = {};
  for (const v of views) {
    const n = g.node(v.name);
    out[v.name] = [Math.round(n.x - n.width / 2), Math.round(n.y - n.height / 2)];
  }
  return out;
}

// ------------------------------------------------------------------- the cards
interface CardData extends Record<string, unknown> {
  view: CardView;
  live: LiveState;
  models: ModelOption[];
  send: (message: unknown) => void;
  running: boolean;
}

/** A text field that tells the kernel on blur (or Ctrl+Enter), not on every key. */
function Field(props: {
  label: string;
  value: string;
  multiline?: boolean;
  type?: string;
  onCommit: (value: string) => void;
  testid?: string;
}) {
  const [text, setText] = React.useState(props.value);
  // what was last sent (or last came from the kernel): an edit is sent once, whatever
  // re-renders happen between typing and leaving the field
  const sent = React.useRef(props.value);
  const editing = React.useRef(false);
  const typed = React.useRef(props.value);
  const onCommit = React.useRef(props.onCommit);
  onCommit.current = props.onCommit;
  React.useEffect(() => {
    sent.current = props.value;
    if (!editing.current) {
      setText(props.value); // a change from the kernel; never over an edit in progress
    }
  }, [props.value]);
  const commit = (value: string) => {
    editing.current = false;
    if (value !== sent.current) {
      sent.current = value;
      onCommit.current(value);
    }
  };
  // a card the canvas mounts again (React Flow re-measures it) must not drop an edit in
  // progress: a field that goes away while edited sends what was typed
  React.useEffect(
    () => () => {
      if (editing.current) {
        commit(typed.current);
      }
    },
    []
  );
  const common = {
    'aria-label': props.label,
    'data-testid': props.testid,
    className: 'nodrag nowheel byok-canvas-field',
    value: text,
    // the element's own value: the state of this render may not have caught up yet
    onBlur: (e: React.FocusEvent<HTMLInputElement | HTMLTextAreaElement>) =>
      commit(e.currentTarget.value),
    onChange: (e: React.ChangeEvent<HTMLInputElement | HTMLTextAreaElement>) => {
      editing.current = true;
      typed.current = e.target.value;
      setText(e.target.value);
    },
    onKeyDown: (e: React.KeyboardEvent<HTMLInputElement | HTMLTextAreaElement>) => {
      e.stopPropagation(); // Backspace in a field must not delete the card
      if (e.key === 'Enter' && (e.ctrlKey || e.metaKey || !props.multiline)) {
        commit(e.currentTarget.value);
      }
    }
  };
  return (
    <label className="byok-canvas-row">
      <span>{props.label}</span>
      {props.multiline ? <textarea rows={3} {...common} /> : <input type={props.type ?? 'text'} {...common} />}
    </label>
  );
}

function Badge({ live }: { live: LiveState }) {
  const state = live.state ?? 'idle';
  const parts: string[] = [];
  if (live.rows_done !== undefined) {
    parts.push(`${live.rows_done} rows`);
    if (live.rows_error) {
      parts.push(`${live.rows_error} errors`);
    }
  }
  if (live.tokens_in !== undefined) {
    parts.push(`${live.tokens_in} → ${live.tokens_out ?? 0} tok`);
  }
  if (live.latency_s !== undefined) {
    parts.push(`${live.latency_s.toFixed(2)} s`);
  }
  return (
    <div className="byok-canvas-badges">
      <span className={`byok-canvas-state byok-state-${state}`} data-testid="state" role="status">
        {state}
      </span>
      {live.cost_usd !== undefined && (
        <span className="byok-canvas-cost" data-testid="cost" data-cost={live.cost_usd ?? ''}>
          {money(live.cost_usd)}
        </span>
      )}
      <span className="byok-canvas-meta">{parts.join(' · ')}</span>
    </div>
  );
}

/** The model list of a card; its options are made when it is first used (a hundred cards
 * times a few hundred models would otherwise be tens of thousands of elements). */
function ModelPicker(props: {
  name: string;
  value: string;
  models: ModelOption[];
  onPick: (id: string) => void;
}) {
  const [open, setOpen] = React.useState(false);
  const known = props.models.find(m => m.id === props.value);
  const options = open ? props.models : known ? [known] : [];
  return (
    <label className="byok-canvas-row">
      <span>model</span>
      <select
        className="nodrag byok-canvas-field"
        aria-label={`model of ${props.name}`}
        data-testid="model"
        value={props.value}
        onFocus={() => setOpen(true)}
        onPointerDown={() => setOpen(true)}
        onChange={e => props.onPick(e.target.value)}
      >
        {!known && <option value={props.value}>{props.value}</option>}
        {options.map(m => (
          <option key={m.id} value={m.id}>
            {m.label}
          </option>
        ))}
      </select>
    </label>
  );
}

function Card({ data, selected }: NodeProps<Node<CardData>>) {
  const { view, live, models, send, running } = data;
  const update = (changes: Record<string, unknown>) =>
    send({ type: 'update', name: view.name, changes });
  const what = { llm: 'LLM', search: 'web search', python: 'python', input: 'input' }[view.kind];
  return (
    <div
      className={`byok-canvas-card byok-kind-${view.kind}${selected ? ' selected' : ''}`}
      data-testid={`card-${view.name}`}
      data-state={live.state ?? 'idle'}
    >
      <Handle type="target" position={Position.Left} id="in" aria-label={`input port of ${view.name}`} />
      <div className="byok-canvas-title">
        <Field label="name" value={view.name} onCommit={v => update({ name: v })} testid="name" />
        <span className="byok-canvas-kind">{what}</span>
      </div>
      {view.kind === 'llm' && (
        <>
          <ModelPicker name={view.name} value={view.model ?? ''} models={models} onPick={v => update({ model: v })} />
          <Field label="prompt" multiline value={view.template ?? ''} onCommit={v => update({ template: v })} testid="prompt" />
          <div className="byok-canvas-pair">
            <Field label="max tokens" type="number" value={String(view.max_tokens ?? '')} onCommit={v => update({ max_tokens: v })} testid="max_tokens" />
            <Field label="temperature" type="number" value={view.temperature === null || view.temperature === undefined ? '' : String(view.temperature)} onCommit={v => update({ temperature: v })} testid="temperature" />
          </div>
        </>
      )}
      {view.kind === 'search' && (
        <Field label="query" multiline value={view.template ?? ''} onCommit={v => update({ template: v })} testid="prompt" />
      )}
      {view.kind === 'python' && (
        <Field label="function" value={view.function ?? ''} onCommit={v => update({ function: v })} testid="function" />
      )}
      <div className="byok-canvas-actions">
        <label className="nodrag">
          <input
            type="checkbox"
            checked={!!view.pinned}
            aria-label={`pin ${view.name}`}
            onChange={e => send({ type: 'pin', name: view.name, value: e.target.checked })}
          />{' '}
          pin
        </label>
        <button
          className="nodrag"
          disabled={running}
          aria-label={`run ${view.name} alone`}
          data-testid="run-node"
          onClick={() => send({ type: 'run_node', name: view.name })}
        >
          ▶ node
        </button>
      </div>
      <Badge live={live} />
      {view.problem && (
        <div className="byok-canvas-problem" role="alert" data-testid="problem">
          {view.problem}
        </div>
      )}
      {live.error && <div className="byok-canvas-problem" role="alert">{live.error}</div>}
      {live.text && (
        <div className="byok-canvas-output nowheel" data-testid="output" aria-live="polite">
          {live.text}
        </div>
      )}
      <Handle type="source" position={Position.Right} id="out" aria-label={`output port of ${view.name}`} />
    </div>
  );
}

function InputCard({ data, selected }: NodeProps<Node<CardData & { value: string; setValue: (v: string) => void }>>) {
  const short = data.view.name.replace(/^input\./, '');
  return (
    <div className={`byok-canvas-card byok-kind-input${selected ? ' selected' : ''}`} data-testid={`card-${data.view.name}`}>
      <div className="byok-canvas-title">
        <b>input.{short}</b>
      </div>
      <Field label="value" value={data.value} onCommit={data.setValue} testid="input-value" />
      <Handle type="source" position={Position.Right} id="out" aria-label={`output port of input ${short}`} />
    </div>
  );
}

// not 'input': React Flow styles its own built-in 'input' type
const nodeTypes = { card: Card, source: InputCard };

// ---------------------------------------------------------------- the canvas
function Palette({ send }: { send: (m: unknown) => void }) {
  const [fn, setFn] = React.useState('');
  const [input, setInput] = React.useState('');
  return (
    <div className="byok-canvas-palette" role="toolbar" aria-label="add a node">
      <button data-testid="add-llm" onClick={() => send({ type: 'add', kind: 'llm' })}>+ LLM</button>
      <button data-testid="add-search" onClick={() => send({ type: 'add', kind: 'search' })}>+ Web search</button>
      <span className="byok-canvas-inline">
        <input aria-label="python function (module:function)" placeholder="module:function" value={fn} onChange={e => setFn(e.target.value)} />
        <button data-testid="add-python" onClick={() => send({ type: 'add', kind: 'python', function: fn })}>+ Python</button>
      </span>
      <span className="byok-canvas-inline">
        <input aria-label="input name" placeholder="input name" value={input} onChange={e => setInput(e.target.value)} />
        <button data-testid="add-input" onClick={() => send({ type: 'add', kind: 'input', name: input })}>+ Input</button>
      </span>
    </div>
  );
}

function Header({ model, send }: { model: Model; send: (m: unknown) => void }) {
  const run = useTrait<Record<string, any>>(model, 'run_state');
  const name = useTrait<string>(model, 'pipeline_name');
  const path = useTrait<string>(model, 'path');
  const keysCommand = useTrait<string>(model, 'keys_command');
  const [file, setFile] = React.useState(path);
  React.useEffect(() => setFile(path), [path]);
  const running = run.status === 'running' || run.status === 'stopping';
  return (
    <div className="byok-canvas-header">
      <b className="byok-canvas-name">{name}</b>
      <button className="byok-canvas-run" data-testid="run" disabled={running} aria-label="run the pipeline" onClick={() => send({ type: 'run' })}>
        ▶ Run
      </button>
      <button data-testid="stop" disabled={!running} aria-label="stop the run" onClick={() => send({ type: 'stop' })}>
        ■ Stop
      </button>
      <span className="byok-canvas-money" data-testid="estimate" title={run.estimate_note ?? ''}>
        {run.estimate_usd !== undefined && run.estimate_usd !== null ? `≈ ${money(run.estimate_usd)}` : ''}
      </span>
      <span className="byok-canvas-money" data-testid="total">
        {run.total_usd !== undefined && run.total_usd !== null ? `total ${money(run.total_usd)}` : ''}
      </span>
      <span className={`byok-canvas-status byok-status-${run.status ?? 'idle'}`} data-testid="status" data-status={run.status ?? 'idle'} role="status">
        {run.message ?? ''}
      </span>
      <span className="byok-canvas-spacer" />
      <input className="byok-canvas-path" aria-label="pipeline file" value={file} onChange={e => setFile(e.target.value)} />
      <button data-testid="save" onClick={() => send({ type: 'save', path: file })}>Save</button>
      <button data-testid="load" onClick={() => send({ type: 'load', path: file })}>Load</button>
      <button data-testid="refresh" onClick={() => send({ type: 'refresh' })} aria-label="Refresh models" title="after adding a key in the BYOK panel">
        ⟳ models
      </button>
      <a href="#" data-commandlinker-command={keysCommand} className="byok-canvas-keys" title="BYOK: Add an API Key (keys are never typed here, so they never pass through the kernel)">
        add a key in the BYOK panel
      </a>
    </div>
  );
}

function Flow({ model, el }: { model: Model; el: HTMLElement }) {
  const views = useTrait<CardView[]>(model, 'nodes');
  const wires = useTrait<{ source: string; target: string }[]>(model, 'edges');
  const live = useTrait<Record<string, LiveState>>(model, 'node_state');
  const models = useTrait<ModelOption[]>(model, 'models');
  const inputs = useTrait<Record<string, string>>(model, 'inputs');
  const run = useTrait<Record<string, any>>(model, 'run_state');
  const running = run.status === 'running' || run.status === 'stopping';
  const send = React.useCallback((m: unknown) => model.send(m), [model]);
  const [nodes, setNodes] = React.useState<Node[]>([]);
  const placed = React.useRef<Record<string, [number, number]>>({});

  const setInput = React.useCallback(
    (name: string, value: string) => send({ type: 'inputs', values: { [name]: value } }),
    [send]
  );

  // cards from the kernel's views; a card without a saved place gets dagre's
  React.useEffect(() => {
    const missing = views.filter(v => (v.x === null || v.y === null) && !placed.current[v.name]);
    if (missing.length) {
      const all = layout(views, wires);
      const moved: Record<string, [number, number]> = {};
      const fresh = missing.length === views.length;
      for (const v of missing) {
        let [x, y] = all[v.name];
        if (!fresh) {
          // beside the others, not on top of them
          const xs = Object.values(placed.current).map(p => p[0]);
          x = xs.length ? Math.max(...xs) + CARD_W + 60 : x;
        }
        moved[v.name] = [x, y];
        placed.current[v.name] = [x, y];
      }
      send({ type: 'move', positions: moved });
    }
    for (const v of views) {
      if (v.x !== null && v.y !== null) {
        placed.current[v.name] = [v.x, v.y];
      }
    }
    setNodes(old => {
      const before = new Map(old.map(n => [n.id, n]));
      return views.map(v => {
        const [x, y] = placed.current[v.name] ?? [0, 0];
        const prev = before.get(v.name);
        const { x: _x, y: _y, ...shown } = v;
        let data: Record<string, unknown>;
        if (v.kind === 'input') {
          const short = v.name.replace(/^input\./, '');
          data = { view: v, live: {}, models, send, running, value: inputs[short] ?? '', setValue: (val: string) => setInput(short, val) };
        } else {
          data = { view: v, live: live[v.name] ?? {}, models, send, running };
        }
        // a card whose contents did not change keeps its data object: React Flow skips it
        const key = JSON.stringify([shown, data.live, data.value ?? null, running]);
        const same = prev && (prev as any).key === key && prev.data.models === models;
        if (same) {
          data = prev.data;
          if (prev.position.x === x && prev.position.y === y) {
            return prev; // nothing changed: the very same node
          }
        }
        return {
          // what React Flow measured (a node object without it is hidden until measured
          // again: every kernel update made cards blink and lose the focus of a field)
          ...(prev ? { measured: prev.measured, width: prev.width, height: prev.height } : {}),
          id: v.name,
          type: v.kind === 'input' ? 'source' : 'card',
          position: prev && prev.position.x === x && prev.position.y === y ? prev.position : { x, y },
          selected: prev?.selected ?? false,
          ariaLabel: `${v.kind} node ${v.name}`,
          key,
          data
        } as Node;
      });
    });
  }, [views, wires, live, models, inputs, running, send, setInput]);

  const edges: Edge[] = React.useMemo(
    () =>
      wires.map(w => ({
        id: `${w.source}->${w.target}`,
        source: w.source,
        target: w.target,
        animated: (live[w.target]?.state ?? '') === 'running' || (live[w.target]?.state ?? '') === 'streaming',
        ariaLabel: `wire from ${w.source} to ${w.target}`
      })),
    [wires, live]
  );

  const onNodesChange = React.useCallback((changes: NodeChange[]) => {
    setNodes(ns => applyNodeChanges(changes.filter(c => c.type !== 'remove'), ns));
  }, []);

  const relayout = () => {
    const all = layout(views, wires);
    placed.current = { ...all };
    send({ type: 'move', positions: all });
  };

  return (
    <div className="byok-canvas-flow" data-testid="flow">
      <ReactFlow
        nodes={nodes}
        edges={edges}
        nodeTypes={nodeTypes}
        onNodesChange={onNodesChange}
        onConnect={c => send({ type: 'connect', source: c.source, target: c.target })}
        onDelete={({ nodes: gone, edges: cut }) => {
          const removed = new Set(gone.map(n => n.id));
          for (const e of cut) {
            if (!removed.has(e.source) && !removed.has(e.target)) {
              send({ type: 'disconnect', source: e.source, target: e.target });
            }
          }
          for (const n of gone) {
            send({ type: 'remove', name: n.id });
          }
        }}
        onNodeDragStop={(_e, _n, dragged) => {
          const moved: Record<string, [number, number]> = {};
          for (const n of dragged) {
            moved[n.id] = [Math.round(n.position.x), Math.round(n.position.y)];
            placed.current[n.id] = moved[n.id];
          }
          send({ type: 'move', positions: moved });
        }}
        deleteKeyCode={['Delete', 'Backspace']}
        fitView
        minZoom={0.1}
        proOptions={{ hideAttribution: true }}
      >
        <Background />
        <Controls showInteractive={false} />
        <Drawn el={el} count={views.length} />
      </ReactFlow>
      <button className="byok-canvas-layout" data-testid="layout" onClick={relayout}>
        auto layout
      </button>
    </div>
  );
}

/** Marks the host element once every card has been measured (for tests and benchmarks). */
function Drawn({ el, count }: { el: HTMLElement; count: number }) {
  const initialized = useNodesInitialized();
  React.useEffect(() => {
    if (initialized && count > 0) {
      const shown = el.querySelectorAll('.react-flow__node').length;
      if (shown >= count && !el.dataset.drawnMs) {
        el.dataset.drawnMs = String(performance.now() - Number(el.dataset.t0));
      }
      el.dataset.drawn = String(shown);
    }
  }, [initialized, count, el]);
  return null;
}

function App({ model, el }: { model: Model; el: HTMLElement }) {
  const send = React.useCallback((m: unknown) => model.send(m), [model]);
  return (
    <div className="byok-canvas" role="application" aria-label="pipeline canvas">
      <Header model={model} send={send} />
      <Palette send={send} />
      <ReactFlowProvider>
        <Flow model={model} el={el} />
      </ReactFlowProvider>
    </div>
  );
}

export default {
  render({ model, el }: { model: Model; el: HTMLElement }) {
    el.dataset.t0 = String(performance.now());
    el.classList.add('byok-canvas-host');
    const root = createRoot(el);
    root.render(<App model={model} el={el} />);
    return () => root.unmount();
  }
};
