import { Dialog } from '@jupyterlab/apputils';

import type { HetflowAPI } from '../api';
import { AnswersBody, LoginQuestions } from '../prompts';
import type { LoginPrompt, PromptEvent } from '../types';

const PROMPT: LoginPrompt = {
  id: 'abc123',
  executor: 'perlmutter',
  host: 'alice@login.example.org:22',
  title: '',
  instructions: 'Your one-time code',
  fields: [
    { text: 'Verification code: ', echo: false },
    { text: 'Site: ', echo: true }
  ],
  asked: 0
};

function event(state: 'open' | 'closed'): PromptEvent {
  return { type: 'prompt', task: null, tasks: ['t1'], state, browsers: 1, prompt: PROMPT };
}

function fakeApi(): HetflowAPI & { answerPrompt: jest.Mock; dismissPrompt: jest.Mock } {
  return { answerPrompt: jest.fn(async () => undefined), dismissPrompt: jest.fn(async () => undefined), prompts: jest.fn(async () => [PROMPT]) } as never;
}

describe('AnswersBody', () => {
  it('hides the answers the server does not echo and returns them in order', () => {
    const body = new AnswersBody(PROMPT);
    const inputs = [...body.node.querySelectorAll('input')];
    expect(inputs.map(i => i.type)).toEqual(['password', 'text']);
    expect(body.node.textContent).toContain('Your one-time code');
    inputs[0].value = '123456';
    inputs[1].value = 'nersc';
    expect(body.getValue()).toEqual(['123456', 'nersc']);
  });
});

describe('LoginQuestions', () => {
  afterEach(() => Dialog.flush());

  it('asks once per question and sends the answers', async () => {
    const api = fakeApi();
    const questions = new LoginQuestions(api);
    questions.handle(event('open'));
    questions.handle(event('open'));
    await questions.catchUp();
    await new Promise(resolve => setTimeout(resolve, 0));
    const dialogs = document.querySelectorAll('.jp-Dialog');
    expect(dialogs).toHaveLength(1);
    const input = dialogs[0].querySelector('input') as HTMLInputElement;
    input.value = '654321';
    (dialogs[0].querySelector('.jp-mod-accept') as HTMLButtonElement).click();
    await new Promise(resolve => setTimeout(resolve, 0));
    expect(api.answerPrompt).toHaveBeenCalledWith('abc123', ['654321', '']);
    expect(api.dismissPrompt).not.toHaveBeenCalled();
  });

  it('closes the dialog without answering when the question ends elsewhere', async () => {
    const api = fakeApi();
    const questions = new LoginQuestions(api);
    questions.handle(event('open'));
    await new Promise(resolve => setTimeout(resolve, 0));
    expect(document.querySelectorAll('.jp-Dialog')).toHaveLength(1);
    questions.handle(event('closed'));
    await new Promise(resolve => setTimeout(resolve, 0));
    expect(document.querySelectorAll('.jp-Dialog')).toHaveLength(0);
    expect(api.answerPrompt).not.toHaveBeenCalled();
    expect(api.dismissPrompt).not.toHaveBeenCalled();
  });
});
