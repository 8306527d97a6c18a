import type { ISignal } from '@lumino/signaling';
import { useEffect, useState } from 'react';

/** Re-render when a Lumino signal fires; returns how many times it has fired. */
export function useSignal<T, A>(signal: ISignal<T, A>, accept: (args: A) => boolean = () => true): number {
  const [count, setCount] = useState(0);
  useEffect(() => {
    const slot = (_: T, args: A) => {
      if (accept(args)) {
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
