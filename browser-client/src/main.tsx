/** Entry point: mounts the React app on #root. */

import { StrictMode } from 'react';
import { createRoot } from 'react-dom/client';
import { App } from './App';
import { Api, browserTabSync } from './lib/api';
import './style.css';

const root = document.getElementById('root');
if (!root) throw new Error('page is missing #root');
createRoot(root).render(
  <StrictMode>
    <App api={new Api(undefined, undefined, browserTabSync())} />
  </StrictMode>,
);
