import type { Random } from '../../src/core/clock.ts';
import type { AuthzRuntime, AuthzRuntimeDeps } from '../../src/filters/authz/authz-filter.ts';
import { createAuthzRuntime } from '../../src/filters/authz/authz-filter.ts';
import type { FilterDeps } from '../../src/filters/filter-kind.ts';
import type { IPAccessRuntime, IPAccessRuntimeDeps } from '../../src/filters/ip-access/ip-access-filter.ts';
import { createIPAccessRuntime } from '../../src/filters/ip-access/ip-access-filter.ts';
import type { ValidateRuntime, ValidateRuntimeDeps } from '../../src/filters/validate/validate-filter.ts';
import { createValidateRuntime } from '../../src/filters/validate/validate-filter.ts';
import { createFakeClock } from './fake-clock.ts';

/** A clock that moves only when told and a fixed random source: filters built with these are deterministic. */
function testFilterDeps(random: Random = () => 0.5): FilterDeps {
  return { clock: createFakeClock(), random };
}

type Overrides<D> = Omit<D, keyof FilterDeps> & Partial<FilterDeps>;

export function authzRuntime(opts: Overrides<AuthzRuntimeDeps>): AuthzRuntime {
  return createAuthzRuntime({ ...testFilterDeps(), ...opts });
}

export function validateRuntime(opts: Overrides<ValidateRuntimeDeps> = {}): ValidateRuntime {
  return createValidateRuntime({ ...testFilterDeps(), ...opts });
}

export function ipAccessRuntime(opts: Overrides<IPAccessRuntimeDeps> = {}): IPAccessRuntime {
  return createIPAccessRuntime({ ...testFilterDeps(), ...opts });
}
