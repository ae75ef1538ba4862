// The store reaches components through a React context (one store per window).
import { createContext, useContext } from 'react';
import { useStore } from 'zustand';
import type { WorkbenchState, WorkbenchStore } from './store';

export const StoreContext = createContext<WorkbenchStore | null>(null);

export function useW<T>(selector: (s: WorkbenchState) => T): T {
  const store = useContext(StoreContext);
  if (!store) throw new Error('the workbench store is missing');
  return useStore(store, selector);
}

export function useActions(): WorkbenchState {
  const store = useContext(StoreContext);
  if (!store) throw new Error('the workbench store is missing');
  return store.getState();
}
