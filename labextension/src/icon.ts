import { LabIcon } from '@jupyterlab/ui-components';

const svg = `<svg xmlns="http://www.w3.org/2000/svg" width="16" height="16" viewBox="0 0 24 24">
  <g class="jp-icon3" fill="#616161">
    <circle cx="6" cy="5" r="3"/><circle cx="18" cy="5" r="3"/><circle cx="12" cy="19" r="3"/>
    <path d="M7 7.5l4 9M17 7.5l-4 9" stroke="#616161" stroke-width="1.6" fill="none"/>
  </g>
</svg>`;

export const hetflowIcon = new LabIcon({ name: 'hetflow:graph', svgstr: svg });
