import path from 'node:path';
import type { Reporter, TestModule } from 'vitest/node';

/*
 * Prints the attack catalogue's case count (issue #10: "the test prints its
 * case count"): every test under test/security/, by class (its file), with how
 * many passed. Counted from the run's own results, so a skipped or filtered
 * case is never counted as held.
 */
export default class CatalogueReporter implements Reporter {
  onTestRunEnd(testModules: ReadonlyArray<TestModule>): void {
    const classes: Array<{ name: string; cases: number; passed: number }> = [];
    for (const module of testModules) {
      const relative = path.relative(process.cwd(), module.moduleId).split(path.sep).join('/');
      if (!relative.startsWith('test/security/')) continue;
      let cases = 0;
      let passed = 0;
      for (const test of module.children.allTests()) {
        cases++;
        if (test.result().state === 'passed') passed++;
      }
      classes.push({ name: path.basename(relative, '.test.ts'), cases, passed });
    }
    if (!classes.length) return;
    const cases = classes.reduce((n, c) => n + c.cases, 0);
    const passed = classes.reduce((n, c) => n + c.passed, 0);
    const byClass = classes
      .sort((a, b) => a.name.localeCompare(b.name))
      .map((c) => `${c.name} ${c.passed}/${c.cases}`)
      .join(', ');
    process.stdout.write(`\nattack catalogue (test/security): ${passed} of ${cases} cases held: ${byClass}\n`);
  }
}
