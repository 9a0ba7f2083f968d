// What TypeScript needs to know about imports that vite handles: Svelte components and stylesheets.

declare module '*.svelte' {
  import type { Component } from 'svelte';
  const component: Component<any>;
  export default component;
}

declare module '*.css';
