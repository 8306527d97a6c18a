import type { ISignal } from '@lumino/signaling';
import { useEffect, useRef, useState, useSyncExternalStore } from 'react';

import type { WorkflowModel } from './model';
import type { Task } from './types';

/** Re-render when a Lumino signal fires and `accept` (as of the latest render) takes its args; returns how many
 * times it has fired. */
export function useSignal<T, A>(signal: ISignal<T, A>, accept: (args: A) => boolean = () => true): number {
  const [count, setCount] = useState(0);
  const latest = useRef(accept);
  latest.current = accept;
  useEffect(() => {
    const slot = (_: T, args: A) => {
      if (latest.current(args)) {
        setCount(c => c + 1);
      }
    };
    signal.connect(slot);
    return () => {
      signal.disconnect(slot);
    };
  }, [signal]);
  return count;
}

/** One task as the model has it now, re-rendering only when that task changes (a graph node's own state). */
export function useTask(model: WorkflowModel, id: string): Task | undefined {
  return useSyncExternalStore(
    listener => model.watch(id, listener),
    () => model.get(id)
  );
}
