import { jvmLimits, type LanguageDescriptor } from './language.ts'

const IDENTIFIER = '[A-Za-z_$][\\w$]*'
const TYPE_DECLARATION = new RegExp(`\\b(?:class|interface|enum|record)\\s+(${IDENTIFIER})`, 'g')
const PACKAGE = new RegExp(`^\\s*package\\s+(${IDENTIFIER}(?:\\s*\\.\\s*${IDENTIFIER})*)\\s*;`, 'm')
const MAIN_METHOD = /\bstatic\s+(?:final\s+)?void\s+main\s*\(/

/** Where a Java program lives and which class starts it. */
export interface JavaEntry {
  /** `<the public top-level type>.java` (javac demands that name), else `Main.java` */
  sourceFile: string
  /** the top-level type declaring `static void main(`, else the public one, else the first; with its package */
  mainClass: string
}

/** Reads the names javac and java need from the code itself (comments and literals do not count). */
export function findJavaEntry (code: string): JavaEntry {
  const text = blankCommentsAndLiterals(code)
  const depths = braceDepths(text)
  const topLevel = [...text.matchAll(TYPE_DECLARATION)]
    .filter((match) => depths[match.index] === 0)
    .map((match) => ({ name: match[1] as string, index: match.index, isPublic: /\bpublic\b[^;{}]*$/.test(text.slice(0, match.index)) }))
  const publicType = topLevel.find((type) => type.isPublic)
  const main = MAIN_METHOD.exec(text)
  const withMain = main === null ? undefined : topLevel.filter((type) => type.index < main.index).at(-1)
  const name = (withMain ?? publicType ?? topLevel[0])?.name ?? 'Main'
  const pkg = PACKAGE.exec(text)?.[1]?.replace(/\s+/g, '')
  return { sourceFile: `${publicType?.name ?? 'Main'}.java`, mainClass: pkg === undefined ? name : `${pkg}.${name}` }
}

/** The code with every comment, string, text block and char literal replaced by spaces (same length). */
function blankCommentsAndLiterals (code: string): string {
  return code.replace(/\/\/[^\n]*|\/\*[\s\S]*?(?:\*\/|$)|"""[\s\S]*?(?:"""|$)|"(?:[^"\\\n]|\\.)*"?|'(?:[^'\\\n]|\\.)*'?/g,
    (literal) => literal.replace(/[^\n]/g, ' '))
}

/** The `{}` nesting depth before each character. */
function braceDepths (text: string): number[] {
  const depths: number[] = []
  let depth = 0
  for (const char of text) {
    depths.push(depth)
    if (char === '{') depth++
    else if (char === '}') depth = Math.max(0, depth - 1)
  }
  return depths
}

/**
 * The prepared JVM (sandbox/prepared.py): javac is loaded and compiles a small program once, so the JIT
 * has compiled it, then the JVM waits for its job. It compiles the
 * program with the same javac (its errors print as the command line's do; a failure before `S` is a
 * compile error), then runs the main class in a class loader of its own, and an uncaught exception ends
 * the JVM as `java Main` would, its stack trace without this class's frames.
 */
const PREPARE = `import java.io.FileOutputStream;
import java.io.OutputStream;
import java.lang.reflect.InvocationTargetException;
import java.lang.reflect.Method;
import java.net.URL;
import java.net.URLClassLoader;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.Arrays;
import javax.tools.JavaCompiler;
import javax.tools.ToolProvider;

public class Prepare {
  public static void main(String[] ignored) throws Throwable {
    Path dir = Path.of("/tmp/.warden");
    JavaCompiler javac = ToolProvider.getSystemJavaCompiler();
    Files.writeString(dir.resolve("Warm.java"), WARM);
    javac.run(null, OutputStream.nullOutputStream(), OutputStream.nullOutputStream(), "-d", dir.resolve("warm").toString(), dir.resolve("Warm.java").toString());
    String[] job;
    try (OutputStream signal = new FileOutputStream("/tmp/.warden/signal")) {
      signal.write('L');
      signal.flush();
      job = new String(Files.readAllBytes(dir.resolve("job")), StandardCharsets.UTF_8).split("\\0", -1);
      int status = javac.run(null, null, null, "-encoding", "UTF-8", "-d", dir.resolve("classes").toString(), job[0]);
      if (status != 0) System.exit(status);
      signal.write('S');
    }
    URLClassLoader loader = new URLClassLoader(new URL[] { dir.resolve("classes").toUri().toURL() }, ClassLoader.getPlatformClassLoader());
    Thread.currentThread().setContextClassLoader(loader);
    Method main = Class.forName(job[1], false, loader).getMethod("main", String[].class);
    try {
      main.invoke(null, (Object) Arrays.copyOfRange(job, 2, job.length - 1));
    } catch (InvocationTargetException error) {
      Throwable cause = error.getCause();
      StackTraceElement[] frames = cause.getStackTrace();
      int own = 0;
      while (own < frames.length && !frames[own].getClassName().startsWith("jdk.internal.reflect.") && !frames[own].getClassName().equals("java.lang.reflect.Method")) own++;
      cause.setStackTrace(Arrays.copyOf(frames, own));
      throw cause;
    }
  }

  static final String WARM = """
    import java.util.*;
    import java.util.stream.*;
    public class Warm {
      record Point(int x, int y) {}
      interface Shape { double area(); }
      public static void main(String[] args) throws Exception {
        List<Point> points = new ArrayList<>();
        for (int i = 0; i < 10; i++) points.add(new Point(i, i * i));
        Map<Boolean, List<Integer>> parts = points.stream().map(Point::y).collect(Collectors.partitioningBy(y -> y % 2 == 0));
        Shape circle = () -> Math.PI;
        StringBuilder text = new StringBuilder(String.format("%d %.2f %s%n", points.size(), circle.area(), parts));
        try { Integer.parseInt(args.length > 0 ? args[0] : "x"); } catch (NumberFormatException e) { text.append(e.getMessage()); }
        System.out.println(text);
      }
    }
    """;
}
`

/**
 * javac, then java, each with the execution's memory and CPU (the JVM cannot see its cgroup): the heap
 * gets 60% of the memory limit, so a heap bomb ends in Java's own OutOfMemoryError, not a kill. javac
 * runs with the client compiler only (a third faster for a snippet); the program gets the full JIT.
 */
export default {
  id: 'java',
  aliases: ['java'],
  program: ({ code, limits }) => {
    const entry = findJavaEntry(code)
    // the JVM's own warnings (a thread it could not start) go to stderr, not into the program's stdout
    const jvm = [...jvmLimits(limits), '-XX:MaxRAMPercentage=60', '-XX:-UsePerfData', '-Xlog:disable', '-Xlog:all=warning:stderr']
    return {
      runner: 'steps',
      sourceFile: entry.sourceFile,
      steps: [
        {
          name: 'compile',
          argv: ['/usr/bin/javac', ...jvm.map((flag) => `-J${flag}`), '-J-XX:TieredStopAtLevel=1', '-encoding', 'UTF-8', '-d', '{dir}/classes', '{source}'],
        },
        { name: 'run', argv: ['/usr/bin/java', ...jvm, '-cp', '{dir}/classes', entry.mainClass, '{args}'] },
      ],
      // compiled first (not run by the source launcher, which trims stack traces its own way)
      prepare: {
        key: 'java',
        argv: ['/bin/sh', '-c', `/usr/bin/javac ${jvm.map((flag) => `-J${flag}`).join(' ')} -J-XX:TieredStopAtLevel=1 -d /tmp/.warden/boot /tmp/.warden/Prepare.java && exec /usr/bin/java ${jvm.join(' ')} -cp /tmp/.warden/boot Prepare`],
        handoff: 'job',
        files: { 'Prepare.java': PREPARE },
      },
    }
  },
  requires: ['/usr/bin/javac', '/usr/bin/java'],
  install: 'default-jdk-headless',
} satisfies LanguageDescriptor
