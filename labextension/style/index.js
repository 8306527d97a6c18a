// The style module JupyterLab loads for hetflow (package.json "styleModule").
import './base.css';
