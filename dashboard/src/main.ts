// The dashboard's entry: global styles, then the shell. Everything else loads from App.svelte.

import { mount } from 'svelte';
import App from './App.svelte';
import './styles.css';

const target = document.getElementById('app');
if (!target) throw new Error('index.html has no #app element');
mount(App, { target });
