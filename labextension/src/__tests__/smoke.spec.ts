// Proves that the unit-test runner works (jest + ts-jest + jsdom); replace freely.
describe('the test runner', () => {
  it('runs TypeScript tests in a DOM', () => {
    const div = document.createElement('div');
    div.textContent = String(1 + 1);
    expect(div.textContent).toBe('2');
  });
});
