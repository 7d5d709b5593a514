/**
 * Unit tests for the pure modules (errors, transforms) and the API module. The API module's two
 * JupyterLab imports are mapped to small stand-ins, so no ESM package needs transforming.
 */
module.exports = {
  testEnvironment: 'node',
  roots: ['<rootDir>/src'],
  testMatch: ['**/__tests__/**/*.spec.ts'],
  transform: {
    '^.+\\.tsx?$': ['ts-jest', { tsconfig: 'tsconfig.test.json' }]
  },
  moduleNameMapper: {
    '^@jupyterlab/services$': '<rootDir>/src/__tests__/mocks/services.ts',
    '^@jupyterlab/coreutils$': '<rootDir>/src/__tests__/mocks/coreutils.ts'
  },
  transformIgnorePatterns: ['/node_modules/']
};
