/** Questions a remote system asks at login (an MFA one-time code): a dialog each, its answers sent once to the engine,
 * which hands them to the waiting connection and keeps nothing. A question answered elsewhere (a cell, another
 * browser) or timed out closes its dialog. */

import { Dialog, showErrorMessage } from '@jupyterlab/apputils';
import { Widget } from '@lumino/widgets';

import type { HetflowAPI } from './api';
import type { LoginPrompt, PromptEvent } from './types';

/** The dialog's body: the server's instructions and one input per question (hidden unless the server says echo). */
export class AnswersBody extends Widget implements Dialog.IBodyWidget<string[]> {
  private readonly inputs: HTMLInputElement[];

  constructor(prompt: LoginPrompt) {
    super();
    this.addClass('hetflow-login-question');
    if (prompt.instructions.trim()) {
      const instructions = document.createElement('p');
      instructions.textContent = prompt.instructions;
      this.node.appendChild(instructions);
    }
    this.inputs = prompt.fields.map(field => {
      const label = document.createElement('label');
      label.textContent = field.text;
      const input = document.createElement('input');
      input.type = field.echo ? 'text' : 'password';
      input.autocomplete = 'one-time-code';
      input.className = 'jp-mod-styled';
      input.setAttribute('aria-label', field.text.trim());
      label.appendChild(input);
      this.node.appendChild(label);
      return input;
    });
  }

  getValue(): string[] {
    return this.inputs.map(input => input.value);
  }
}

export class LoginQuestions {
  private readonly open = new Map<string, Dialog<string[]>>();

  constructor(private readonly api: HetflowAPI) {}

  handle(event: PromptEvent): void {
    if (event.state === 'open') {
      void this.ask(event.prompt);
    } else {
      this.close(event.prompt.id);
    }
  }

  /** After (re)connecting: the questions asked while no socket was open. */
  async catchUp(): Promise<void> {
    for (const prompt of await this.api.prompts()) {
      void this.ask(prompt);
    }
  }

  private async ask(prompt: LoginPrompt): Promise<void> {
    if (this.open.has(prompt.id)) {
      return;
    }
    const dialog = new Dialog<string[]>({
      title: `${prompt.host} asks (executor ${prompt.executor})`,
      body: new AnswersBody(prompt),
      buttons: [Dialog.cancelButton({ label: 'Dismiss' }), Dialog.okButton({ label: 'Send' })],
      focusNodeSelector: 'input'
    });
    this.open.set(prompt.id, dialog);
    let result: Dialog.IResult<string[]>;
    try {
      result = await dialog.launch();
    } catch {
      return; // closed because the question ended elsewhere
    } finally {
      this.open.delete(prompt.id);
    }
    try {
      if (result.button.accept) {
        await this.api.answerPrompt(prompt.id, result.value ?? []);
      } else {
        await this.api.dismissPrompt(prompt.id);
      }
    } catch (err) {
      void showErrorMessage('hetflow: the login question', (err as Error).message);
    }
  }

  private close(id: string): void {
    const dialog = this.open.get(id);
    this.open.delete(id);
    dialog?.dispose();
  }
}
